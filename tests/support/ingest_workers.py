"""Ingest workers as real processes, and a device publisher that records the broker's acks.

For the external-broker fault tests: `fleetcore serve --role ingest` runs as a child process
(so it can be SIGKILLed like any crashed worker), and `Publisher` is a paho-mqtt client with a
persistent session that sends numbered telemetry and remembers which messages the broker
PUBACKed: those are the ones the platform must not lose.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tests.support import forkserver
from tests.support.env import FLEETCORE
from tests.support.postgres import free_port

READINGS_PER_MESSAGE = 5
# Readings carry their own distinct timestamps, from an hour ago: recent enough that no
# retention job removes them, and never in the future.
BASE_TS = int(time.time() * 1000) - 3_600_000


class IngestWorker:
    """`fleetcore serve --role ingest` under a stable ingest id, on its own HTTP port."""

    def __init__(self, ingest_id: str, *, broker_url: str, database_url: str, root: Path) -> None:
        self.ingest_id = ingest_id
        self.port = free_port()
        self.log_path = root / f"worker-{ingest_id}.log"
        self.env = {
            **os.environ,
            "FLEETCORE_ENVIRONMENT": "production",
            "FLEETCORE_SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "FLEETCORE_MQTT_URL": broker_url,
            "FLEETCORE_DATABASE_URL": database_url,
            "FLEETCORE_PORT": str(self.port),
            "FLEETCORE_MQTT_INGEST_ID": ingest_id,
            "FLEETCORE_DATA_DIR": str(root),
            "FLEETCORE_LOG_FORMAT": "json",
        }
        self.process: forkserver.Process | None = None

    def start(self) -> None:
        """Start the process (its log is appended to across restarts)."""
        with self.log_path.open("ab") as log:
            self.process = forkserver.popen(
                [FLEETCORE, "serve", "--role", "ingest"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def ready(self) -> bool:
        """GET /ready answers 200 (connected to the broker and subscribed)."""
        if self.process is None or self.process.poll() is not None:
            raise AssertionError(f"worker {self.ingest_id} exited:\n{self.log()[-3000:]}")
        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=1)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` and reap the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process would not exit
            self.process.send_signal(sig)
            self.process.wait(timeout=20)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the process keeps its sockets but does nothing (nor reconnects)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after freeze()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log(self) -> str:
        """Everything the worker has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def telemetry(index: int) -> bytes:
    """Message `index`: five readings of key `n`, each at its own timestamp."""
    first = BASE_TS + index * READINGS_PER_MESSAGE
    return orjson.dumps(
        [{"ts": first + i, "values": {"n": index}} for i in range(READINGS_PER_MESSAGE)]
    )


def expected_readings(sent: Sequence[tuple[str, int]]) -> set[tuple[str, int]]:
    """(device id, ts) of every reading in these (device id, message index) messages."""
    return {
        (device, BASE_TS + index * READINGS_PER_MESSAGE + i)
        for device, index in sent
        for i in range(READINGS_PER_MESSAGE)
    }


class Publisher:
    """A paho-mqtt client with a persistent session: QoS 1 telemetry of several devices.

    `acked` holds (device, index) of each message the broker answered with a successful
    PUBACK. paho keeps unacknowledged messages and sends them again (DUP) when it reconnects
    to the same session, which is how a device rides out a broker restart.
    """

    def __init__(self, port: int, credentials: tuple[str, str], client_id: str) -> None:
        self.port = port
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(*credentials)
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[str, int]] = {}
        self._early: dict[int, ReasonCode] = {}
        self.acked: set[tuple[str, int]] = set()
        self.refused: dict[tuple[str, int], int] = {}
        self.no_subscribers: set[tuple[str, int]] = set()
        self.connections = 0

    def connect(self) -> None:
        """Connect (a persistent session of an hour) and start the network thread."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        self.client.connect(
            "127.0.0.1", self.port, keepalive=5, clean_start=False, properties=properties
        )
        self.client.loop_start()

    def publish(self, device: str, index: int) -> None:
        """Send message `index` of `device` (queued by paho while disconnected)."""
        # Not under self._lock: paho calls on_publish holding its own lock, which publish()
        # takes too. The PUBACK may come before publish() returns: it waits in _early.
        info = self.client.publish(f"devices/{device}/telemetry", telemetry(index), qos=1)
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = (device, index)
            else:
                self._settle((device, index), early)

    @property
    def outstanding(self) -> int:
        """Messages sent but not yet acknowledged by the broker."""
        with self._lock:
            return len(self._pending)

    def pause(self) -> None:
        """Stop the network thread: nothing is sent, received or reconnected meanwhile."""
        self.client.loop_stop()

    def resume(self) -> None:
        """Connect again to the same session (paho then sends what is unacknowledged)."""
        # loop_start makes a new wake-up socket pair and leaves the old one open (paho 2.2)
        self.client._reset_sockets(sockpair_only=True)
        self.client.reconnect()
        self.client.loop_start()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, *_args: Any) -> None:
        self.connections += 1

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        with self._lock:
            sent = self._pending.pop(mid, None)
            if sent is None:
                self._early[mid] = reason
            else:
                self._settle(sent, reason)

    def _settle(self, sent: tuple[str, int], reason: ReasonCode) -> None:
        if reason.is_failure:
            self.refused[sent] = reason.value
        else:
            self.acked.add(sent)
            if reason.value == 0x10:  # accepted, but no subscription matched
                self.no_subscribers.add(sent)
