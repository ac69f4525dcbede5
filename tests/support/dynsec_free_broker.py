"""A throwaway Mosquitto that lets every client in and use every topic (no ACLs).

For tests of the platform's side of an external broker, where the "devices" must publish
what the broker itself would produce (mounted ThingsBoard topics). Authentication and
topic ACLs are proven against dynamic security elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import free_port

MOSQUITTO = Path("/usr/sbin/mosquitto")


class OpenMosquitto:
    """mosquitto -c <config> on a free loopback port, anonymous clients allowed."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.port = free_port()
        self.tls = tls  # (certificate, key): a second listener, TLS only, on tls_port
        self.tls_port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-open-mosquitto-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 0\n"
            "log_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "") + self._tls()
        )
        with (self.root / "log").open("wb") as log:
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "log").read_text()[-2000:])
            if "running" in (self.root / "log").read_text():
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start within 10 s")

    def _tls(self) -> str:
        if self.tls is None:
            return ""
        certificate, key = self.tls
        return f"listener {self.tls_port} 127.0.0.1\ncertfile {certificate}\nkeyfile {key}\n"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
