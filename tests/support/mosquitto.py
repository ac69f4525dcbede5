"""A throwaway Mosquitto broker (Debian's package), started and stopped by the tests.

It is the reference the broker scenarios are checked against: password authentication,
`devices/<username>/#` ACLs and `use_username_as_clientid` (Mosquitto's answer to client
id take-over between users), plus `platform` and `recorder` users that may use every topic.
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
# Two platform users: with use_username_as_clientid, one user is one client id.
PLATFORM = ("platform", "platform-secret")
RECORDER = ("recorder", "recorder-secret")


class MosquittoServer:
    """mosquitto -c <generated config> on a free loopback port."""

    def __init__(
        self,
        users: dict[str, str],
        *,
        acl_rules: str = "",
        username_as_clientid: bool = True,
        extra_config: str = "",
    ) -> None:
        """`acl_rules` are appended to the ACL file, `extra_config` to mosquitto.conf (a
        benchmark's limits); `username_as_clientid=False` lets one user hold several
        connections (ingest workers sharing a subscription)."""
        if not MOSQUITTO.exists():
            raise RuntimeError(f"{MOSQUITTO} not found; `make system-deps` installs mosquitto")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-mosquitto-"))
        self.root.chmod(0o755)
        self.users = {**users, PLATFORM[0]: PLATFORM[1], RECORDER[0]: RECORDER[1]}
        self.acl_rules, self.extra_config = acl_rules, extra_config
        self.username_as_clientid = username_as_clientid
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        passwords = self.root / "passwords"
        passwords.touch()
        for user, password in self.users.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwords), user, password],
                check=True,
                capture_output=True,
            )
        acl = self.root / "acl"
        acl.write_text(
            "".join(f"user {name}\ntopic readwrite #\n\n" for name in (PLATFORM[0], RECORDER[0]))
            + "pattern readwrite devices/%u/#\n\n"
            + self.acl_rules
        )
        config = self.root / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {acl}\n"
            + ("use_username_as_clientid true\n" if self.username_as_clientid else "")
            + "persistence false\n"
            "max_queued_messages 0\n"  # the recording client may fall behind a burst
            "log_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "") + self.extra_config
        )
        for path in (passwords, acl, config):
            path.chmod(0o644)
        with (self.root / "log").open("wb") as log:  # the child keeps its own handle
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

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        shutil.rmtree(self.root, ignore_errors=True)
