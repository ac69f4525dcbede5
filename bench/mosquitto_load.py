"""Mosquitto under load for the external-broker benches: the broker, publishers, figures.

One place decides how the broker is configured for a bench (who may publish where, how many
QoS 1 messages may be in flight or queued) and how load is made: publishers in child
processes, QoS 1, MQTT 3.1.1 on plain sockets with packets encoded before the clock starts
and a wide in-flight window, so neither their Python nor a client library's cost per
message competes with what is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import secrets
import statistics
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
PUBLISHER_WINDOW = 1_000  # QoS 1 messages each publisher connection has in flight
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
        out.put(asyncio.run(_publish_raw(port, login, count, make)))
    except BaseException as exc:  # the parent reports it rather than hanging
        out.put({"error": repr(exc)})


async def _publish_raw(port: int, login: tuple[str, str], count: int, make: Make) -> dict[str, Any]:
    """MQTT 3.1.1 on a plain socket, packets encoded before the clock starts, PUBLISHER_WINDOW
    QoS 1 messages in flight: a publisher that costs a few microseconds a message, so the
    machine's cores go to what is measured (paho-mqtt publishers took most of a core each
    for about 10 k messages/s and were the limit)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_connect_packet(f"bench-pub-{os.getpid()}", login))
    connack = await reader.readexactly(4)
    if connack[0] != 0x20 or connack[3] != 0:
        raise RuntimeError(f"CONNACK refused: {connack.hex()}")
    packets = [_publish_packet(*make(i), i % 65_535 + 1) for i in range(count)]
    window = asyncio.Semaphore(PUBLISHER_WINDOW)

    async def read_acks() -> None:
        for _ in range(count):
            ack = await reader.readexactly(4)
            if ack[0] != 0x40:
                raise RuntimeError(f"expected a PUBACK, got {ack.hex()}")
            window.release()

    acks = asyncio.create_task(read_acks())
    begin = time.monotonic()
    for n, packet in enumerate(packets):
        await window.acquire()
        writer.write(packet)
        if n % 64 == 0:
            await writer.drain()
    await writer.drain()
    await asyncio.wait_for(acks, 600)
    seconds = time.monotonic() - begin
    writer.write(b"\xe0\x00")  # DISCONNECT
    writer.close()
    return {"began": begin, "seconds": seconds, "published": count}


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def _connect_packet(client_id: str, login: tuple[str, str]) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # user name, password, clean session
    body = _text("MQTT") + bytes([4, flags]) + (120).to_bytes(2, "big")
    body += _text(client_id) + _text(login[0]) + _text(login[1])
    return b"\x10" + _length(len(body)) + body


def _publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    body = _text(topic) + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _length(len(body)) + body  # PUBLISH, QoS 1


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
