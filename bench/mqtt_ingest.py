"""MQTT telemetry ingest, side by side with its ceilings, in one run.

Every message is `{"ts": ..., "values": {"k0": 20.5, ..., "k9": 29.5}}` (10 readings; the
single-reading runs send only "k0", as most devices do) on v1/devices/me/telemetry at QoS 1,
with a fresh timestamp per device so nothing is de-duplicated. Publishers run in PUBLISHERS
child processes (never in the server's process), each holding its share of the DEVICES
connections and pipelining publishes with at most WINDOW unacknowledged per connection; a
message counts when its PUBACK arrives.

1. broker_noop: FleetBroker alone, in a child process, with hooks that accept anyone and
   acknowledge at once (the broker's own ceiling); at 10 readings and at 1 a message.
2. db_bulk_insert: TelemetryWriter driven directly with batches shaped like the MQTT load
   (DEVICES devices, 10 keys a message, pipeline-sized batches): SQLite and PostgreSQL.
3. embedded_sqlite / embedded_postgresql: a real `fleetcore serve` with the embedded broker
   (SQLite at 10 readings and at 1 a message); organization, admin, profile (rate limit out
   of the way) and devices made the way an operator would, publishers authenticating with
   username = device token. A PUBACK is sent only after the commit, and the rows in ts_num
   are counted to cross-check it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.context import ForkContext
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.env import fleetcore_env
from tests.support.mqtt_raw import DISCONNECT, connect_packet, packet, publish_packet
from tests.support.postgres import PostgresServer, free_port

from bench.telemetry_http import PASSWORD, ROOT, _cli, organization_admin, serving
from bench.telemetry_ingest import asyncpg_dsn, make_devices, migrated, now_ms
from fleetcore.db import Database, create_engine
from fleetcore.mqtt.broker import ClientInfo, FleetBroker, Inbound, Principal
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading

DEVICES = 100  # one MQTT connection each
PUBLISHERS = 2  # processes sharing the devices (the machine has 2 cores)
WINDOW = 100  # unacknowledged QoS 1 publishes per connection
KEYS = 10
WARM_UP_S = 1.0
SECONDS = 8.0
DRAIN_S = 30.0  # at most, waiting for the PUBACKs of what is in flight at the end
BATCH_MESSAGES = 500  # 5,000 readings: the pipeline's default batch (ingest_batch_size)
WRITER_SECONDS = 4.0
# Targets (issue 20): the broker alone, QoS 1 messages/s into no-op hooks; the embedded
# broker + SQLite, readings/s committed at 10 readings a message and messages/s at 1.
TARGET_BROKER_NOOP_MESSAGES = 40_000
TARGET = 60_000
TARGET_SINGLE_MESSAGES = 15_000
TOPIC = "v1/devices/me/telemetry"
RATE_PER_S, BURST = 10_000, 100_000  # the profile's limits: far above what one device sends


def payload_template(readings: int) -> bytes:
    """A message of `readings` readings, its timestamp left as %d."""
    values = b",".join(b'"k%d":2%d.5' % (k, k) for k in range(readings))
    return b'{"ts":%d,"values":{' + values + b"}}"


_PAYLOAD = payload_template(KEYS)
_CONNACK, _PUBACK = 2, 4


# -- publishers (child processes) -------------------------------------------------------


@dataclass
class _Tally:
    """One publisher process's counts; `sending` stops new publishes at the end."""

    acked: int = 0
    sent: int = 0
    lost: int = 0
    inflight: int = 0
    sending: bool = False
    drained: asyncio.Event | None = None  # set when nothing is in flight after the end

    def settle(self, count: int) -> None:
        """`count` messages are no longer in flight (acknowledged, or their connection lost)."""
        self.inflight -= count
        if not self.sending and not self.inflight and self.drained is not None:
            self.drained.set()


class _Device(asyncio.Protocol):
    """One device's connection: keeps WINDOW QoS 1 publishes in flight, counts PUBACKs."""

    def __init__(
        self, token: str, client_id: str, first_ts: int, tally: _Tally, payload: bytes = _PAYLOAD
    ) -> None:
        self.token, self.client_id, self.ts, self.tally = token, client_id, first_ts, tally
        self.payload = payload
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inflight = 0
        self._next_id = 0
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(connect_packet(self.client_id, username=self.token, keepalive=60))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inflight or not self.connack.done():
            self.tally.lost += 1
        self.tally.settle(self.inflight)
        self.inflight = 0
        if not self.connack.done():
            self.connack.set_exception(ConnectionError("closed before CONNACK"))
        if not self.closed.done():
            self.closed.set_result(None)

    def publish(self, count: int) -> None:
        """Send `count` more messages, fresh timestamps, in one write."""
        assert self.transport is not None
        packets = []
        for _ in range(count):
            self._next_id = self._next_id % 65535 + 1
            self.ts += 1
            packets.append(
                publish_packet(TOPIC, self.payload % self.ts, qos=1, packet_id=self._next_id)
            )
        self.inflight += count
        self.tally.inflight += count
        self.tally.sent += count
        self.transport.write(b"".join(packets))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        acks, at = 0, 0
        while len(buffer) - at >= 2:
            kind = buffer[at] >> 4
            length, shift, head = 0, 0, at + 1
            while head < len(buffer):
                byte = buffer[head]
                head += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            else:
                break
            if len(buffer) - head < length:
                break
            if kind == _PUBACK:
                acks += 1
            elif kind == _CONNACK and not self.connack.done():
                self.connack.set_result(buffer[head + 1])
            at = head + length
        self._buffer = buffer[at:]
        if acks:
            self.inflight -= acks
            self.tally.acked += acks
            if self.tally.sending:
                self.publish(acks)
            self.tally.settle(acks)


async def _publish(
    port: int,
    tokens: Sequence[str],
    first_ts: int,
    ready: Queue[Any],
    start: Event,
    start_at: Any,
    readings: int = KEYS,
) -> dict[str, Any]:
    """Connect every device, wait for the start, publish, then drain what is in flight."""
    loop = asyncio.get_running_loop()
    tally = _Tally()
    connections: list[_Device] = []
    payload = payload_template(readings)
    for token in tokens:
        device = _Device(token, f"bench-{uuid.uuid4().hex[:12]}", first_ts, tally, payload)
        await loop.create_connection(lambda d=device: d, "127.0.0.1", port)
        connections.append(device)
    codes = await asyncio.wait_for(asyncio.gather(*(d.connack for d in connections)), 60)
    if any(codes):
        raise RuntimeError(f"CONNACK refused: {sorted(set(codes))}")
    ready.put(os.getpid())
    await loop.run_in_executor(None, start.wait)
    t0 = start_at.value
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    tally.sending = True
    for device in connections:
        device.publish(WINDOW)
    await asyncio.sleep(max(0.0, t0 + WARM_UP_S - time.monotonic()))
    at_warm, cpu_at_warm = tally.acked, time.process_time()
    await asyncio.sleep(max(0.0, t0 + WARM_UP_S + SECONDS - time.monotonic()))
    at_end, cpu_at_end = tally.acked, time.process_time()
    tally.sending = False
    tally.drained = asyncio.Event()
    tally.settle(0)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tally.drained.wait(), DRAIN_S)
    unacked = tally.inflight
    for device in connections:
        if device.transport is not None and not device.transport.is_closing():
            device.transport.write(packet(DISCONNECT, 0, b""))
            device.transport.close()
    await asyncio.wait([asyncio.ensure_future(d.closed) for d in connections], timeout=5)
    return {
        "measured_acks": at_end - at_warm,
        "measured_cpu_s": cpu_at_end - cpu_at_warm,
        "acked": tally.acked,
        "sent": tally.sent,
        "unacked_at_close": unacked,
        "connections_lost": tally.lost,
    }


def _publisher_main(
    port: int,
    tokens: Sequence[str],
    first_ts: int,
    ready: Queue[Any],
    start: Event,
    start_at: Any,  # a shared double: the monotonic time publishing starts
    results: Queue[Any],
    readings: int = KEYS,
) -> None:
    try:
        results.put(asyncio.run(_publish(port, tokens, first_ts, ready, start, start_at, readings)))
    except BaseException as exc:  # the parent reports it rather than hanging
        ready.put(os.getpid())
        results.put({"error": repr(exc)})


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _snapshot(server_pid: int, count: Any) -> tuple[float, float, int | None]:
    rows = count() if count is not None else None
    return time.monotonic(), cpu_seconds(server_pid), rows


def drive(
    port: int,
    tokens: Sequence[str],
    first_ts: int,
    server_pid: int,
    count: Any = None,
    readings: int = KEYS,
) -> dict[str, Any]:
    """PUBLISHERS processes publish as the devices of `tokens` on MQTT `port`; returns the
    measured rates and totals, and the cores the server (`server_pid`) and the publishers
    used meanwhile. `count()`, if given, counts stored readings: it is called at the start
    and the end of the measured window for a database-side rate."""
    ctx: ForkContext = multiprocessing.get_context("fork")
    ready: Queue[Any] = ctx.Queue()
    results: Queue[Any] = ctx.Queue()
    start = ctx.Event()
    start_at = ctx.Value("d", 0.0)
    processes = [
        ctx.Process(
            target=_publisher_main,
            args=(port, tokens[p::PUBLISHERS], first_ts, ready, start, start_at, results, readings),
        )
        for p in range(PUBLISHERS)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=120)
        t0 = time.monotonic() + 0.1
        start_at.value = t0
        start.set()
        time.sleep(max(0.0, t0 + WARM_UP_S - time.monotonic()))
        first = _snapshot(server_pid, count)
        time.sleep(max(0.0, t0 + WARM_UP_S + SECONDS - time.monotonic()))
        last = _snapshot(server_pid, count)
        parts = [results.get(timeout=DRAIN_S + 60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        raise RuntimeError(f"publisher failed: {errors}")
    measured = sum(p["measured_acks"] for p in parts)
    figures: dict[str, Any] = {
        "readings_per_message": readings,
        "readings_per_s": round(measured * readings / SECONDS),
        "messages_per_s": round(measured / SECONDS),
        "acked_messages": sum(p["acked"] for p in parts),
        "sent_messages": sum(p["sent"] for p in parts),
        "unacked_at_close": sum(p["unacked_at_close"] for p in parts),
        "connections_lost": sum(p["connections_lost"] for p in parts),
        "server_cores_used": round((last[1] - first[1]) / (last[0] - first[0]), 2),
        "publisher_cores_used": round(sum(p["measured_cpu_s"] for p in parts) / SECONDS, 2),
    }
    if first[2] is not None and last[2] is not None:
        figures["db_rows_per_s_in_window"] = round((last[2] - first[2]) / (last[0] - first[0]))
    return figures


# -- 1. the broker alone ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Anyone:
    key: str


class NoopHooks:
    """Anyone may connect; every message is taken and acknowledged at once."""

    def __init__(self) -> None:
        self.accepted = 0

    async def authenticate(self, client: ClientInfo) -> Principal:
        return _Anyone(client.username or client.client_id)

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        return False

    def accept(self, principal: Principal, message: Inbound) -> None:
        self.accepted += 1
        return None

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        return []

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        return None

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        return None


async def _noop_broker(port: int, ready: Event, stop: Event) -> int:
    hooks = NoopHooks()
    listener = {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}
    broker = FleetBroker({"listeners": {"default": listener}}, hooks)
    await broker.start()
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, stop.wait)
    await broker.shutdown()
    return hooks.accepted


def _noop_broker_main(port: int, ready: Event, stop: Event, accepted: Queue[Any]) -> None:
    accepted.put(asyncio.run(_noop_broker(port, ready, stop)))


def broker_noop(readings: int = KEYS) -> dict[str, Any]:
    """FleetBroker alone, in its own process, under the same load."""
    ctx = multiprocessing.get_context("fork")
    ready, stop, accepted = ctx.Event(), ctx.Event(), ctx.Queue()
    port = free_port()
    process = ctx.Process(target=_noop_broker_main, args=(port, ready, stop, accepted))
    process.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the broker did not start")
        tokens = [f"device-{i}" for i in range(DEVICES)]
        figures = drive(port, tokens, now_ms(), process.pid or 0, readings=readings)
    finally:
        stop.set()
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    figures["broker_accepted_messages"] = accepted.get(timeout=5) if not accepted.empty() else None
    return figures


# -- 2. the database's bulk insert ------------------------------------------------------


def mqtt_batch(
    org_id: uuid.UUID, devices: Sequence[uuid.UUID], ts: int, messages: int = BATCH_MESSAGES
) -> list[DeviceReadings]:
    """`messages` messages as the pipeline batches them: devices in turn, KEYS readings
    each, every message of a device one ms after its previous one."""
    return [
        DeviceReadings(
            devices[m % len(devices)],
            org_id,
            [Reading(f"k{k}", ts + m // len(devices), Kind.NUMBER, 20.5 + k) for k in range(KEYS)],
        )
        for m in range(messages)
    ]


async def writer_rate(url: str) -> dict[str, int]:
    """TelemetryWriter on `url`: readings/s over WRITER_SECONDS spent in write()."""
    database = Database(create_engine(url, pool_size=4))
    try:
        org_id, devices = await make_devices(database, DEVICES)
        writer = TelemetryWriter(database.engine)
        ts = now_ms() - 3_600_000
        per_batch_ms = BATCH_MESSAGES // DEVICES
        await writer.write(mqtt_batch(org_id, devices, ts))  # interns the series
        spent, readings, batches = 0.0, 0, 0
        while spent < WRITER_SECONDS:
            ts += per_batch_ms
            batch = mqtt_batch(org_id, devices, ts)
            begin = time.perf_counter()
            result = await writer.write(batch)
            spent += time.perf_counter() - begin
            assert len(result.stored) == BATCH_MESSAGES * KEYS, result.duplicates
            readings += len(result.stored)
            batches += 1
        return {"readings_per_s": round(readings / spent), "batches": batches}
    finally:
        await database.close()


async def db_bulk_insert(server: PostgresServer, tmp: Path) -> dict[str, Any]:
    """The writer on both databases, batches of BATCH_MESSAGES messages."""
    pg_url = server.create_database("mqtt_writer")
    sqlite_url = f"sqlite+aiosqlite:///{tmp / 'mqtt-writer.db'}"
    for url in (pg_url, sqlite_url):
        await migrated(url)
    return {
        "sqlite": await writer_rate(sqlite_url),
        "postgresql": await writer_rate(pg_url),
        "batch_readings": BATCH_MESSAGES * KEYS,
    }


# -- 3. and 4. `fleetcore serve` with the embedded broker -------------------------------


def _env(mqtt_port: int, **extra: str) -> dict[str, str]:
    env = fleetcore_env()
    env.update(FLEETCORE_LOG_LEVEL="warning", FLEETCORE_MQTT_PORT=str(mqtt_port), **extra)
    return env


async def provision(
    port: int,
    rules: Callable[[int, str], list[dict[str, Any]]] | None = None,
    profile_extra: dict[str, Any] | None = None,
) -> list[str]:
    """Organization, admin, a profile with the MQTT rate limit out of the way (and the
    settings `profile_extra` adds) and DEVICES devices of it, through the API, and the rules
    `rules(i, device_id)` gives for device i; returns the device tokens."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        admin = await organization_admin(http)
        profile = await http.post(
            "/api/v1/device-profiles",
            headers=admin,
            json={
                "name": "mqtt bench",
                "mqtt_rate_per_s": RATE_PER_S,
                "mqtt_burst": BURST,
                **(profile_extra or {}),
            },
        )
        profile.raise_for_status()
        tokens = []
        for i in range(DEVICES):
            device = await http.post(
                "/api/v1/devices",
                headers=admin,
                json={
                    "name": f"m{i}",
                    "serial_number": f"M{i}",
                    "profile_id": profile.json()["id"],
                },
            )
            device.raise_for_status()
            tokens.append(device.json()["access_token"])
            for rule in rules(i, device.json()["id"]) if rules else []:
                (await http.post("/api/v1/rules", headers=admin, json=rule)).raise_for_status()
        return tokens


def _wait_for_mqtt(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the embedded broker is not listening") from None
            time.sleep(0.1)


def _sqlite_counter(path: Path) -> Any:
    def count() -> int:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            return int(connection.execute("SELECT count(*) FROM ts_num").fetchone()[0])

    return count


def _pg_counter(url: str) -> Any:
    async def fetch() -> int:
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            return int(await connection.fetchval("SELECT count(*) FROM ts_num"))
        finally:
            await connection.close()

    return lambda: asyncio.run(fetch())


_COUNTED = (
    "fleetcore_rule_evaluations_total",
    "fleetcore_rule_late_readings_total",
    "fleetcore_rules_batch_seconds_sum",  # wall time of evaluations (yields included)
)


def _server_metrics(port: int) -> dict[str, float]:
    """A few counters from the server's /metrics (after the load)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _COUNTED:
            found[name.removeprefix("fleetcore_")] = float(value)
    return found


def _dead_letters(database: str, target: str) -> int:
    if database == "sqlite":
        with sqlite3.connect(target) as connection:
            return int(connection.execute("SELECT count(*) FROM dead_letters").fetchone()[0])

    async def fetch() -> int:
        connection = await asyncpg.connect(asyncpg_dsn(target))
        try:
            return int(await connection.fetchval("SELECT count(*) FROM dead_letters"))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def embedded(
    database: str,
    server: PostgresServer,
    tmp: Path,
    *,
    rules: Callable[[int, str], list[dict[str, Any]]] | None = None,
    profile_extra: dict[str, Any] | None = None,
    label: str = "",
    readings: int = KEYS,
) -> dict[str, Any]:
    """A `fleetcore serve` on `database` ("sqlite" or "postgresql") under the MQTT load of
    `readings` readings a message, with the rules `rules(i, device_id)` gives for each
    device and the profile settings `profile_extra`."""
    mqtt_port, http_port = free_port(), free_port()
    if database == "sqlite":
        data_dir = tmp / f"mqtt-sqlite{label}"
        env = _env(mqtt_port, FLEETCORE_DATA_DIR=str(data_dir))
        target = str(data_dir / "fleetcore.db")
        count = _sqlite_counter(data_dir / "fleetcore.db")
    else:
        target = server.create_database(f"mqtt_embedded{label}")
        env = _env(mqtt_port, FLEETCORE_DATABASE_URL=target)
        _cli(env, "db", "upgrade")
        count = _pg_counter(target)
    _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
    with serving(env, http_port, tmp / f"serve-mqtt-{database}{label}.log") as process:
        _wait_for_mqtt(mqtt_port)
        tokens = asyncio.run(provision(http_port, rules, profile_extra))
        figures = drive(
            mqtt_port, tokens, now_ms() - 3_600_000, process.pid, count, readings=readings
        )
        figures["metrics"] = _server_metrics(http_port)
    stored = count()  # after a clean stop: everything accepted is written
    figures["rows_in_db"] = stored
    figures["acked_readings"] = figures["acked_messages"] * readings
    figures["all_acked_stored"] = stored >= figures["acked_readings"]
    figures["dead_letters"] = _dead_letters(database, target)
    return figures


# -- the run ----------------------------------------------------------------------------


def _ratio(value: float, ceiling: float) -> float:
    return round(value / ceiling, 3) if ceiling else float("nan")


def _target(value: float, target: float) -> dict[str, Any]:
    return {
        "value": value,
        "target": target,
        "met": value >= target,
        "ratio": _ratio(value, target),
    }


def run() -> dict[str, Any]:
    """The ceilings, then the embedded broker on SQLite and PostgreSQL."""
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            noop = broker_noop()
            noop_single = broker_noop(readings=1)
            bulk = asyncio.run(db_bulk_insert(server, Path(tmp)))
            lite = embedded("sqlite", server, Path(tmp))
            lite_single = embedded("sqlite", server, Path(tmp), label="-single", readings=1)
            pg = embedded("postgresql", server, Path(tmp))
    finally:
        server.stop()
    for name, figures in (("sqlite", lite), ("postgresql", pg)):
        figures["ratio_to_broker_noop"] = _ratio(figures["readings_per_s"], noop["readings_per_s"])
        figures["ratio_to_db_bulk_insert"] = _ratio(
            figures["readings_per_s"], bulk[name]["readings_per_s"]
        )
        # One server process runs the broker and the writer's Python under one GIL, so
        # their costs per reading add up: the best both ceilings allow together.
        composed = round(1 / (1 / noop["readings_per_s"] + 1 / bulk[name]["readings_per_s"]))
        figures["composed_ceiling_readings_per_s"] = composed
        figures["ratio_to_composed_ceiling"] = _ratio(figures["readings_per_s"], composed)
    return {
        "name": "mqtt_ingest",
        "devices": DEVICES,
        "clients": DEVICES,
        "publisher_processes": PUBLISHERS,
        "inflight_window": WINDOW,
        "readings_per_message": KEYS,
        "warm_up_s": WARM_UP_S,
        "measured_s": SECONDS,
        "broker_noop": noop,
        "broker_noop_single_reading": noop_single,
        "db_bulk_insert": bulk,
        "embedded_sqlite": lite,
        "embedded_sqlite_single_reading": lite_single,
        "embedded_postgresql": pg,
        "target": {
            "embedded_sqlite_readings_per_s": TARGET,
            "met": lite["readings_per_s"] >= TARGET,
            "ratio": _ratio(lite["readings_per_s"], TARGET),
        },
        "targets": {
            "broker_noop_messages_per_s": _target(
                min(noop["messages_per_s"], noop_single["messages_per_s"]),
                TARGET_BROKER_NOOP_MESSAGES,
            ),
            "embedded_sqlite_readings_per_s_at_10": _target(lite["readings_per_s"], TARGET),
            "embedded_sqlite_messages_per_s_at_1": _target(
                lite_single["messages_per_s"], TARGET_SINGLE_MESSAGES
            ),
        },
        "note": "loopback; one server process (or the bare broker) and "
        f"{PUBLISHERS} publisher processes share the 2 cores, PostgreSQL too; QoS 1, "
        f"{WINDOW} unacknowledged per connection; committed = PUBACKs in the "
        f"{SECONDS:g} s after a {WARM_UP_S:g} s warm-up (a PUBACK follows the commit); "
        "composed ceiling = 1 / (1/broker_noop + 1/db_bulk_insert), both in one process",
    }
