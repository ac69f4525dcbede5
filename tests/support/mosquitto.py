"""A throwaway Mosquitto broker (Debian's package), started and stopped by the tests.

It is the reference the broker scenarios are checked against: password authentication,
`devices/<username>/#` ACLs and `use_username_as_clientid` (Mosquitto's answer to client
id take-over between users), plus `platform` and `recorder` users that may use every topic.

Fault tests ask for more (all off by default): persistence in the temp dir, saved every
`autosave_interval` changes, so that a restart (`halt` then `start`: same port, same data)
keeps persistent sessions and their queued messages; a larger in-flight window; a log of
every packet.
"""

from __future__ import annotations

import os
import shutil
import signal
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
    """mosquitto -c <generated config> on a free loopback port, kept across restarts."""

    def __init__(
        self,
        users: dict[str, str],
        *,
        acl_rules: str = "",
        username_as_clientid: bool = True,
        extra_config: str = "",
        persistence: bool = False,
        autosave_interval: int = 1,
        max_inflight_messages: int | None = None,
        verbose: bool = False,
    ) -> None:
        """`acl_rules` are appended to the ACL file, `extra_config` to mosquitto.conf (a
        benchmark's limits); `username_as_clientid=False` lets one user hold several
        connections (ingest workers sharing a subscription). `persistence` saves the
        database under the temp dir after every `autosave_interval` changes; `verbose` logs
        every packet."""
        if not MOSQUITTO.exists():
            raise RuntimeError(f"{MOSQUITTO} not found; `make system-deps` installs mosquitto")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-mosquitto-"))
        self.root.chmod(0o755)
        self.users = {**users, PLATFORM[0]: PLATFORM[1], RECORDER[0]: RECORDER[1]}
        self.acl_rules, self.extra_config = acl_rules, extra_config
        self.username_as_clientid = username_as_clientid
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.max_inflight_messages = max_inflight_messages
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        """The broker's log (stderr), appended to across restarts."""
        return self.root / "log"

    @property
    def persistence_file(self) -> Path:
        """Where the in-memory database is saved (with persistence)."""
        return self.root / "data" / "mosquitto.db"

    def start(self) -> None:
        """Write the configuration (the first time) and start the broker; wait until it runs."""
        config = self.root / "mosquitto.conf"
        if not config.exists():
            self._configure(config)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:  # the child keeps its own handle
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
        """What the broker has logged since it last started."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read().decode(errors="replace")

    def _configure(self, config: Path) -> None:
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
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwords}",
            f"acl_file {acl}",
            *(["use_username_as_clientid true"] if self.username_as_clientid else []),
            "max_queued_messages 0",  # the recording client may fall behind a burst
            "log_dest stderr",
        ]
        if self.persistence:
            self.persistence_file.parent.mkdir(mode=0o755)
            lines += [
                "persistence true",
                f"persistence_location {self.persistence_file.parent}/",
                # Saved once this many changes (queued messages, subscriptions) are counted.
                "autosave_on_changes true",
                f"autosave_interval {self.autosave_interval}",
            ]
        else:
            lines.append("persistence false")
        if self.max_inflight_messages is not None:
            lines.append(f"max_inflight_messages {self.max_inflight_messages}")
        if self.verbose:
            lines += ["log_type all", "log_timestamp_format %H:%M:%S"]
        if os.geteuid() == 0:
            lines.append("user root")
        config.write_text("".join(f"{line}\n" for line in lines) + self.extra_config)
        for path in (passwords, acl, config):
            path.chmod(0o644)

    def halt(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """End the broker, keeping its files: SIGTERM saves persistence first, SIGKILL
        loses what changed since the last save."""
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """halt(sig), then start again on the same port with the same data."""
        self.halt(sig)
        self.start()

    def stop(self) -> None:
        """End the broker and delete its files."""
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)
