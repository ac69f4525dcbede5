"""Mosquitto under load for the external-broker benches: the broker, publishers, figures.

One place decides how the broker is configured for a bench (who may publish where, how many
QoS 1 messages may be in flight or queued) and how load is made: paho-mqtt publishers in
child processes, QoS 1, MQTT 5, each on its own connection with a wide in-flight window, so
the publishers' own Python never shares a GIL with what is measured.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.queues import Queue
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from tests.support.mosquitto import MosquittoServer

BROKER_INFLIGHT = 1_000  # max_inflight_messages: what Mosquitto sends an MQTT 3 client unacked
# and, as the receive maximum in its CONNACK, what an MQTT 5 publisher may have unacked
PUBLISHER_WINDOW = 1_000  # paho's max_inflight_messages on each publisher connection
PLATFORM_USER = "fleetcore"
KEYS = 10

Make = Callable[[int], tuple[str, bytes]]  # message number -> (topic, payload)


@dataclass(frozen=True, slots=True)
class Broker:
    """A running Mosquitto: its port, the platform login and the publishers' logins."""

    port: int
    platform: tuple[str, str]
    publishers: tuple[tuple[str, str], ...]
    pid: int


@contextlib.contextmanager
def mosquitto(publishers: int, *, topic: str = "devices/#") -> Iterator[Broker]:
    """Mosquitto with a platform user allowed everything and `publishers` users allowed to
    publish on `topic`; queues unbounded (a subscriber may lag a burst), one user may hold
    several connections (ingest workers share one login)."""
    password = secrets.token_urlsafe(16)
    logins = tuple((f"pub{p}", password) for p in range(publishers))
    rules = f"user {PLATFORM_USER}\ntopic readwrite #\n\n" + "".join(
        f"user {user}\ntopic write {topic}\n\n" for user, _ in logins
    )
    server = MosquittoServer(
        {PLATFORM_USER: password, **dict(logins)},
        acl_rules=rules,
        username_as_clientid=False,
        extra_config=f"max_inflight_messages {BROKER_INFLIGHT}\nmax_queued_messages 0\n",
    )
    server.start()
    try:
        assert server.process is not None
        yield Broker(server.port, (PLATFORM_USER, password), logins, server.process.pid)
    finally:
        server.stop()


def paho_client(client_id: str, login: tuple[str, str], *, manual_ack: bool = False) -> paho.Client:
    """A paho-mqtt 2 MQTT 5 client with `login`."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(*login)
    return client


def connect_properties(*, receive_maximum: int, session_expiry_s: int = 0) -> Properties:
    """CONNECT properties: the receive maximum (the broker's in-flight window to us) and
    how long the broker keeps the session after a disconnect."""
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = receive_maximum
    if session_expiry_s:
        properties.SessionExpiryInterval = session_expiry_s
    return properties


def telemetry_payload(ts: int, keys: int = KEYS) -> bytes:
    """`{"ts": ts, "values": {...}}` with `keys` readings (about 200 bytes for 10)."""
    values = ",".join(f'"sensor_k{k}":{21.5 + k + (ts % 997) / 1000:.3f}' for k in range(keys))
    return b'{"ts":%d,"values":{%s}}' % (ts, values.encode())


def _publish(port: int, login: tuple[str, str], count: int, make: Make, out: Queue[Any]) -> None:
    """One publisher process: `count` QoS 1 messages `make(0..count-1)`, then the time from
    the first publish to the last PUBACK."""
    try:
        acked = 0
        done = threading.Event()

        def on_publish(*_: Any) -> None:
            nonlocal acked
            acked += 1
            if acked >= count:
                done.set()

        client = paho_client(f"bench-pub-{os.getpid()}", login)
        client.max_inflight_messages_set(PUBLISHER_WINDOW)
        client.max_queued_messages_set(0)
        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=120)
        client.loop_start()
        messages = [make(i) for i in range(count)]
        begin = time.monotonic()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
        if not done.wait(600):
            raise TimeoutError(f"{acked} of {count} PUBACKs")
        out.put({"began": begin, "seconds": time.monotonic() - begin, "published": count})
        client.disconnect()
        client.loop_stop()
    except BaseException as exc:  # the parent reports it rather than hanging
        out.put({"error": repr(exc)})


class Publishers:
    """Publisher processes, started with `start()`, joined with `wait()`."""

    def __init__(self, broker: Broker, counts: Sequence[int], makes: Sequence[Make]) -> None:
        ctx = multiprocessing.get_context("fork")
        self._out: Queue[Any] = ctx.Queue()
        self._processes = [
            ctx.Process(target=_publish, args=(broker.port, login, count, make, self._out))
            for login, count, make in zip(broker.publishers, counts, makes, strict=True)
        ]
        self.started_at = 0.0

    def start(self) -> None:
        """Fork the publishers; they connect and publish at once."""
        self.started_at = time.monotonic()
        for process in self._processes:
            process.start()

    def wait(self, timeout: float = 600) -> dict[str, Any]:
        """Every publisher's PUBACKs in: how many, how fast, and when the first one began
        publishing (time.monotonic)."""
        try:
            parts = [self._out.get(timeout=timeout) for _ in self._processes]
        finally:
            for process in self._processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
        errors = [p["error"] for p in parts if "error" in p]
        if errors:
            raise RuntimeError(f"publisher failed: {errors}")
        seconds = max(p["seconds"] for p in parts)
        published = sum(p["published"] for p in parts)
        return {
            "published": published,
            "publish_messages_per_s": round(published / seconds),
            "first_publish_at": min(p["began"] for p in parts),
        }


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of repeated measurements, and the runs themselves (whole numbers
    for rates, two decimals for small figures such as cores)."""
    digits = 0 if max(abs(v) for v in values) >= 100 else 2

    def shown(value: float) -> float:
        return round(value) if digits == 0 else round(value, digits)

    return {
        "median": shown(statistics.median(values)),
        "min": shown(min(values)),
        "max": shown(max(values)),
        "runs": [shown(v) for v in values],
    }
