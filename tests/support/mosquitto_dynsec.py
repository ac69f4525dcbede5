"""Mosquitto 2.0 as external-broker mode runs it: dynamic security plus our mount plugin.

Credentials live in the dynamic-security plugin, administered over MQTT with
`mosquitto_ctrl`; `deploy/mosquitto/fleetcore_mount.c` (built once per test session into
`.cache/mosquitto/`) gives ThingsBoard-style devices a `tb/{username}/` mount. The platform
client `fleetcore` reads devices through shared subscriptions and is also the dynsec
administrator. Persistence is on, in the harness's own directory, so `restart()` keeps
persistent sessions and their queued messages, which the external-broker tests rely on.

`mosquitto_ctrl` 2.0.11 exits 0 whatever happens and prints its errors, so `ctrl()` reads
the output; dynsec 2.0.11 substitutes no `%u`/`%c` in ACL topics (every device needs its own
role) and refuses a client that has no password.
"""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.mqtt_raw import connect_packet
from tests.support.postgres import free_port

MOSQUITTO = Path("/usr/sbin/mosquitto")
DYNSEC_PLUGIN = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-mosquitto-plugin.sh"
PLUGIN_CACHE = REPO / ".cache" / "mosquitto"
PLATFORM_USERNAME = "fleetcore"
PLATFORM_ROLE = "fleetcore-platform"

# What the platform client may do (acltype, topic): shared and plain subscriptions to device
# traffic, mounted ThingsBoard traffic and the plugin's notices; commands and configuration
# down; the dynamic-security control topics, since it administers the devices.
PLATFORM_ACLS: tuple[tuple[str, str], ...] = (
    *(
        (kind, topic)
        for topic in ("$share/fleetcore/#", "devices/#", "tb/#", "fleetcore/#")
        for kind in ("subscribePattern", "publishClientReceive")
    ),
    ("publishClientSend", "devices/+/commands"),
    ("publishClientSend", "devices/+/commands/#"),
    ("publishClientSend", "devices/+/config"),
    ("publishClientSend", "tb/#"),
    *(
        (kind, "$CONTROL/dynamic-security/#")
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ),
)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


@functools.cache
def mount_plugin() -> Path:
    """fleetcore_mount.so, built by the script once per session (it skips a fresh build)."""
    built = subprocess.run(
        [str(BUILD_SCRIPT), str(PLUGIN_CACHE)], check=True, capture_output=True, text=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


def device_role(device_id: str) -> str:
    """The dynsec role the platform gives one device."""
    return f"fleetcore-device-{device_id}"


def _connack(port: int, credentials: Credentials) -> int | None:
    """The CONNACK return code for these credentials, or None while nothing answers."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(
                connect_packet(
                    f"ready-{secrets.token_hex(4)}",
                    username=credentials.username,
                    password=credentials.password,
                )
            )
            reply = sock.recv(4)
        except OSError:
            return None
    return reply[3] if len(reply) == 4 and reply[0] == 0x20 else None


class DynsecMosquitto:
    """mosquitto -c <generated config> with dynamic security, on a free loopback port."""

    def __init__(self) -> None:
        if not MOSQUITTO.exists() or not DYNSEC_PLUGIN.exists():
            raise RuntimeError("mosquitto 2.0 not found; `make system-deps` installs it")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-dynsec-"))
        self.root.chmod(0o755)
        self.admin = Credentials("admin", secrets.token_urlsafe(16))
        self.platform = Credentials(PLATFORM_USERNAME, secrets.token_urlsafe(16))
        self.config_file = self.root / "mosquitto.conf"
        self.dynsec_file = self.root / "dynamic-security.json"
        self.log_file = self.root / "log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker (initialising it the first time) and wait until it answers."""
        first = not self.config_file.exists()
        if first:
            self._initialise()
        with self.log_file.open("ab") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config_file)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self._wait_ready()
        if first:
            self._provision_platform()

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file on the way out."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def kill(self) -> None:
        """SIGKILL: whatever the last autosave did not write is lost."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port and data directory."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def url(self) -> str:
        """FLEETCORE_MQTT_URL of the platform client (a dynamic-security administrator)."""
        user = self.platform
        return f"mqtt://{user.username}:{user.password}@127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the broker wrote so far."""
        return self.log_file.read_text(errors="replace")

    # -- dynamic security ---------------------------------------------------------------

    def ctrl(self, *args: str, as_user: Credentials | None = None) -> str:
        """`mosquitto_ctrl ... dynsec <args>`; raises when it reports an error."""
        who = as_user or self.admin
        result = subprocess.run(
            [
                "mosquitto_ctrl",
                *("-h", "127.0.0.1", "-p", str(self.port)),
                *("-u", who.username, "-P", who.password),
                "dynsec",
                *args,
            ],
            stdin=subprocess.DEVNULL,  # createClient without -p would prompt for a password
            capture_output=True,
            text=True,
            timeout=15,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0 or "error" in output.lower():
            raise RuntimeError(f"mosquitto_ctrl dynsec {' '.join(args)}: {output.strip()}")
        return result.stdout

    def add_device(self, device_id: str, token: str) -> Credentials:
        """A device as the platform creates it: its own role, username = id, password = token."""
        role = device_role(device_id)
        self.ctrl("createRole", role)
        for topic in (f"devices/{device_id}/#", "v1/devices/me/#", "v2/fw/#", "v2/sw/#"):
            for kind in ("publishClientSend", "subscribePattern", "publishClientReceive"):
                self.ctrl("addRoleACL", role, kind, topic, "allow")
        self.ctrl("createClient", device_id, "-p", token)
        self.ctrl("addClientRole", device_id, role)
        return Credentials(device_id, token)

    # -- internals ----------------------------------------------------------------------

    def _initialise(self) -> None:
        subprocess.run(
            [
                "mosquitto_ctrl",
                *("dynsec", "init", str(self.dynsec_file)),
                *(self.admin.username, self.admin.password),
            ],
            check=True,
            capture_output=True,
        )
        self.dynsec_file.chmod(0o600)  # password hashes; the broker runs as this user
        data = self.root / "data"
        data.mkdir(mode=0o755)
        self.config_file.write_text(self.config_text(mount_plugin(), data))
        self.config_file.chmod(0o644)

    def config_text(self, plugin: Path, data: Path) -> str:
        """The mosquitto.conf this harness runs (the order of the plugin lines matters)."""
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            "per_listener_settings false\n"
            # First: it must see every ACL check (dynsec's answer ends the chain).
            f"plugin {plugin}\n"
            f"plugin_opt_platform_username {PLATFORM_USERNAME}\n"
            f"plugin {DYNSEC_PLUGIN}\n"
            f"plugin_opt_config_file {self.dynsec_file}\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"  # a consumer away for a restart must not lose messages
            "max_inflight_messages 100\n"
            "log_dest stderr\n" + ("user root\n" if os.geteuid() == 0 else "")
        )

    def _wait_ready(self, within: float = 10.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited:\n{self.log()[-2000:]}")
            code = _connack(self.port, self.admin)
            if code == 0:
                return
            if code is not None:
                raise RuntimeError(f"admin refused (CONNACK {code}):\n{self.log()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not answer within {within} s:\n{self.log()[-2000:]}")

    def _provision_platform(self) -> None:
        # Roles grant receiving too: nothing reaches a client its roles do not name.
        self.ctrl("setDefaultACLAccess", "publishClientReceive", "deny")
        self.ctrl("createRole", PLATFORM_ROLE)
        for kind, topic in PLATFORM_ACLS:
            self.ctrl("addRoleACL", PLATFORM_ROLE, kind, topic, "allow")
        self.ctrl("createClient", self.platform.username, "-p", self.platform.password)
        self.ctrl("addClientRole", self.platform.username, PLATFORM_ROLE)


@asynccontextmanager
async def dynsec_mosquitto() -> AsyncIterator[DynsecMosquitto]:
    """A started DynsecMosquitto, closed (directory removed) on the way out."""
    broker = DynsecMosquitto()
    try:
        await asyncio.to_thread(broker.start)
        yield broker
    finally:
        await asyncio.to_thread(broker.close)
