"""A throwaway Mosquitto with the dynamic-security plugin (Debian's 2.0.11 package).

`mosquitto_ctrl dynsec init` writes the plugin's JSON file with one admin client (the
platform's); every other client is created through the control API, as in production.
Stoppable and restartable on the same port and file: the broker-down tests use that.
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
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
ADMIN = ("fleetcore-admin", "admin-secret-for-tests")


class DynsecBroker:
    """mosquitto -c <generated config> with dynsec on a free loopback port."""

    def __init__(self) -> None:
        if not MOSQUITTO.exists() or not DYNSEC_PLUGIN.exists():
            raise RuntimeError("mosquitto with its dynamic-security plugin is not installed")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-dynsec-"))
        self.root.chmod(0o755)
        self.state = self.root / "dynamic-security.json"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """FLEETCORE_MQTT_URL of the admin (platform) client."""
        return f"mqtt://{ADMIN[0]}:{ADMIN[1]}@127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.state.exists():
            subprocess.run(
                ["mosquitto_ctrl", "dynsec", "init", str(self.state), *ADMIN],
                check=True,
                capture_output=True,
            )
            self.state.chmod(0o644)
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"plugin {DYNSEC_PLUGIN}\n"
            f"plugin_opt_config_file {self.state}\n"
            "persistence false\n"
            "log_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        log_path = self.root / "log"
        self._log_offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.log()[-2000:])
            if "running" in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start within 10 s")

    def log(self) -> str:
        """What this run of the broker logged."""
        path = self.root / "log"
        return path.read_bytes()[self._log_offset :].decode(errors="replace")

    def stop(self) -> None:
        """Stop the broker; its dynsec file stays for a restart."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
