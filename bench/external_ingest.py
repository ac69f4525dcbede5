"""Ingest through an external Mosquitto: N `fleetcore serve --role ingest` workers and
PostgreSQL, side by side with the two ceilings, in one run.

Set-up: a throwaway PostgreSQL (schema by the migrations, DEVICES devices of a profile whose
MQTT rate limit is out of the way, made through the ORM as the other benches do) and a
throwaway Mosquitto (a platform user allowed everything, publisher users allowed
`devices/#`, queues unbounded, max_inflight_messages BROKER_INFLIGHT). Each worker is its own
process, a member of the shared subscription `$share/fleetcore/devices/+/...`, acknowledging
a message only after its batch is committed.

A run: PUBLISHERS processes (paho-mqtt, QoS 1, MQTT 5) publish a fixed number of messages
`devices/{id}/telemetry`, the devices in turn, each message a fresh timestamp for its device
(nothing is de-duplicated). The rate is the readings committed (rows counted in ts_num every
POLL_S) over the time from the first publish to the poll that saw the last row.

Ceilings, measured in the same run: Mosquitto's pass-through to one plain subscriber
(mosquitto_sub draining a queue, bench/mqtt_clients.py) and PostgreSQL's de-duplicating bulk
load of the same kind of rows (COPY into a staging table, INSERT ... ON CONFLICT DO NOTHING,
bench/telemetry_ingest.py). The composed ceiling is the lower of the two: with the workers in
their own processes the broker, the workers and the database run side by side, and the
slowest stage bounds the whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.env import fleetcore_env
from tests.support.postgres import PostgresServer, free_port

from bench import mqtt_clients
from bench.mosquitto_load import (
    BROKER_INFLIGHT,
    Broker,
    Publishers,
    mosquitto,
    spread,
    telemetry_payload,
)
from bench.mqtt_ingest import cpu_seconds
from bench.telemetry_ingest import (
    asyncpg_dsn,
    ceiling_rows,
    make_devices,
    migrated,
    now_ms,
    pg_dedup,
)
from fleetcore.db import Database

BIN = Path(sys.executable).parent
DEVICES = 200
PUBLISHERS = 2  # processes; the machine has 2 cores
# (workers, FLEETCORE_MQTT_INGEST_INFLIGHT or None for the default): a worker's receive
# maximum bounds its rate at about window / commit latency
WORKER_SETS: tuple[tuple[int, int | None], ...] = ((1, None), (2, None), (2, 2_000))
WARM_UP_MESSAGES = 5  # per device, before the measured runs: first traffic of each device
MESSAGES = {10: 20_000, 1: 30_000}  # readings per message -> messages per run
RUNS = 3
CEILING_RUNS = 3
MQTT_LIMITS = (10_000.0, 100_000)  # per device: far above what one device sends here
POLL_S = 0.25
STALL_S = 60.0  # no new row for this long: the run failed
TARGET = 100_000  # readings/s committed (the issue)


def worker_command() -> list[str]:
    """The ingest worker's command line (its settings come from `worker_env`)."""
    return [str(BIN / "fleetcore"), "serve", "--role", "ingest"]


def worker_env(
    broker: Broker, database_url: str, http_port: int, worker: int, inflight: int | None = None
) -> dict[str, str]:
    """A worker's environment: the broker as the platform user, the database, production."""
    user, password = broker.platform
    extra = {} if inflight is None else {"FLEETCORE_MQTT_INGEST_INFLIGHT": str(inflight)}
    env = fleetcore_env(
        **extra,
        FLEETCORE_MQTT_URL=f"mqtt://{user}:{password}@127.0.0.1:{broker.port}",
        FLEETCORE_DATABASE_URL=database_url,
        FLEETCORE_SECRET_KEY=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        FLEETCORE_ENVIRONMENT="production",
        FLEETCORE_PORT=str(http_port),
        FLEETCORE_MQTT_INGEST_ID=f"bench-{worker}",
        FLEETCORE_LOG_LEVEL="warning",
    )
    return env


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"ingest worker exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingest worker not ready: {log.read_text()[-2000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def workers(
    broker: Broker, database_url: str, count: int, logs: Path, inflight: int | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` ingest workers, ready (subscribed); stopped with SIGTERM after."""
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(count):
            port, log = free_port(), logs / f"worker-{count}-{inflight}-{n}.log"
            with log.open("ab") as sink:
                process = subprocess.Popen(
                    worker_command(),
                    env=worker_env(broker, database_url, port, n, inflight),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            _wait_ready(process, port, log)
        yield processes
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


# -- one run ----------------------------------------------------------------------------


def _message(devices: Sequence[str], keys: int, base_ts: int, i: int) -> tuple[str, bytes]:
    """Message i of a publisher: its devices in turn, one ms later per round."""
    device = devices[i % len(devices)]
    return f"devices/{device}/telemetry", telemetry_payload(base_ts + i // len(devices), keys)


def _machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy so far (not idle, not waiting)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += cpu_seconds(pid)
    return total


_PROGRESS = "SELECT (SELECT count(*) FROM ts_num), (SELECT count(*) FROM dead_letters)"


async def _committed(
    dsn: str, publishers: Publishers, expected: int, keys: int, stall_s: float
) -> tuple[float, dict[str, Any]]:
    """Start the publishers, poll until `expected` more rows are in ts_num (a message
    dead-lettered instead counts as its `keys` rows: it is acknowledged and gone); returns
    the monotonic time of the poll that saw the last and the publishers' figures, with the
    dead letters and a sample of them."""
    connection = await asyncpg.connect(dsn)
    try:
        before = await connection.fetchrow(_PROGRESS)
        seen, dead, progress_at = 0, 0, time.monotonic()
        publishers.start()
        while seen + dead * keys < expected:
            await asyncio.sleep(POLL_S)
            now_rows = await connection.fetchrow(_PROGRESS)
            rows, dead_now = now_rows[0] - before[0], now_rows[1] - before[1]
            now = time.monotonic()
            if (rows, dead_now) != (seen, dead):
                seen, dead, progress_at = rows, dead_now, now
            elif now - progress_at > stall_s:
                raise RuntimeError(f"{seen} of {expected} rows, {dead} dead letters")
        done_at = time.monotonic()
        published = await asyncio.get_running_loop().run_in_executor(None, publishers.wait)
        sample = await connection.fetch(
            "SELECT reason, detail, topic FROM dead_letters ORDER BY id DESC LIMIT 3"
        )
    finally:
        await connection.close()
    return done_at, {
        **published,
        "dead_letters": dead,
        "dead_letter_sample": [dict(r) for r in sample] if dead else [],
    }


def ingest_run(
    broker: Broker,
    database_url: str,
    devices: Sequence[str],
    worker_pids: Sequence[int],
    *,
    keys: int,
    messages: int,
    base_ts: int,
    stall_s: float = STALL_S,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """`messages` of `keys` readings through the workers: the committed rate and who
    used the cores meanwhile; a sample of the dead letters, if any."""
    shares = [devices[p::PUBLISHERS] for p in range(PUBLISHERS)]
    counts = [messages // PUBLISHERS] * PUBLISHERS
    counts[-1] += messages - sum(counts)
    makes = [functools.partial(_message, share, keys, base_ts) for share in shares]
    publishers = Publishers(broker, counts, makes)
    cpu = (_cpu(worker_pids), _cpu([broker.pid]), _machine_busy_s())
    done_at, published = asyncio.run(
        _committed(asyncpg_dsn(database_url), publishers, messages * keys, keys, stall_s)
    )
    seconds = done_at - published["first_publish_at"]
    stored = messages - published["dead_letters"]
    return {
        "readings_per_s": stored * keys / seconds,
        "messages_per_s": stored / seconds,
        "publish_messages_per_s": published["publish_messages_per_s"],
        "worker_cores": (_cpu(worker_pids) - cpu[0]) / seconds,
        "mosquitto_cores": (_cpu([broker.pid]) - cpu[1]) / seconds,
        "machine_busy_cores": (_machine_busy_s() - cpu[2]) / seconds,
        "dead_letters": published["dead_letters"],
    }, published["dead_letter_sample"]


# -- the ceilings -----------------------------------------------------------------------


async def _dedup_ceiling(server: PostgresServer) -> list[float]:
    url = server.create_database("ceiling")
    await migrated(url)
    rates = []
    for _ in range(CEILING_RUNS):
        rows = ceiling_rows(now_ms() - 3_600_000)
        rates.append((await pg_dedup(asyncpg_dsn(url), rows))[0])
    return rates


def _pass_through() -> dict[str, Any]:
    with mosquitto(mqtt_clients.PUBLISHERS, topic="bench/#") as broker:
        return mqtt_clients.pass_through(broker, CEILING_RUNS)


# -- the run ----------------------------------------------------------------------------


async def _fleet(url: str) -> list[str]:
    await migrated(url)
    database = Database.from_url(url)
    try:
        _, devices = await make_devices(database, DEVICES, mqtt_limits=MQTT_LIMITS)
    finally:
        await database.close()
    return [str(d) for d in devices]


def _warm_up(broker: Broker, url: str, devices: Sequence[str], pids: list[int], ts: int) -> Any:
    """WARM_UP_MESSAGES 1-reading messages per device, not measured (each device's first
    traffic, the workers' caches); returns what went wrong, if anything, or None."""
    try:
        _, sample = ingest_run(
            broker,
            url,
            devices,
            pids,
            keys=1,
            messages=WARM_UP_MESSAGES * len(devices),
            base_ts=ts,
            stall_s=15,
        )
    except RuntimeError as exc:
        return {"error": str(exc)}
    return {"dead_letter_sample": sample} if sample else None


def _measure(server: PostgresServer, logs: Path) -> dict[str, Any]:
    url = server.create_database("external")
    devices = asyncio.run(_fleet(url))
    figures: dict[str, Any] = {}
    base_ts = now_ms() - 3_600_000
    with mosquitto(PUBLISHERS) as broker:
        for count, inflight in WORKER_SETS:
            with workers(broker, url, count, logs, inflight) as processes:
                pids = [p.pid for p in processes]
                prefix = f"workers_{count}" + (f"_inflight_{inflight}" if inflight else "")
                warm = _warm_up(broker, url, devices, pids, base_ts)
                base_ts += WARM_UP_MESSAGES + 1
                if warm is not None:
                    figures[f"{prefix}_warm_up_problem"] = warm
                for keys, messages in MESSAGES.items():
                    runs, samples = [], []
                    for _ in range(RUNS):
                        result, sample = ingest_run(
                            broker,
                            url,
                            devices,
                            pids,
                            keys=keys,
                            messages=messages,
                            base_ts=base_ts,
                        )
                        runs.append(result)
                        samples += sample
                        base_ts += messages // DEVICES + 1
                    label = f"{prefix}_readings_per_message_{keys}"
                    figures[label] = {k: spread([r[k] for r in runs]) for k in runs[0]}
                    figures[label]["dead_letter_sample"] = samples[:3]
                    print(f"  {label}: {figures[label]['readings_per_s']}", flush=True)
    return figures


def _ratio(value: float, ceiling: float) -> float:
    return round(value / ceiling, 3) if ceiling else float("nan")


def run() -> dict[str, Any]:
    """The ceilings, then each of WORKER_SETS with 10-reading and 1-reading messages."""
    pass_through = _pass_through()
    server = PostgresServer()
    server.start()
    try:
        dedup = spread(asyncio.run(_dedup_ceiling(server)))
        with tempfile.TemporaryDirectory() as tmp:
            figures = _measure(server, Path(tmp))
    finally:
        server.stop()
    pass_readings = pass_through["messages_per_s"]["median"] * max(MESSAGES)
    composed = min(pass_readings, dedup["median"])
    best = max(
        result["readings_per_s"]["median"]
        for label, result in figures.items()
        if label.endswith(f"_readings_per_message_{max(MESSAGES)}")
    )
    for label, result in figures.items():
        if "_readings_per_message_" not in label:
            continue
        keys = int(label.rsplit("_", 1)[1])
        ceiling = min(pass_through["messages_per_s"]["median"] * keys, dedup["median"])
        result["composed_ceiling_readings_per_s"] = round(ceiling)
        result["composed_ceiling_ratio"] = _ratio(result["readings_per_s"]["median"], ceiling)
    return {
        "name": "external_ingest",
        "devices": DEVICES,
        "publisher_processes": PUBLISHERS,
        "messages_per_run": MESSAGES,
        "runs": RUNS,
        "mosquitto_max_inflight_messages": BROKER_INFLIGHT,
        "worker_command": " ".join(worker_command()[1:]),
        "ceilings": {
            "mosquitto_pass_through_messages_per_s": pass_through["messages_per_s"],
            "pg_dedup_rows_per_s": dedup,
            "composed_readings_per_s_10_per_message": round(composed),
        },
        **figures,
        "target": {
            "readings_per_s": TARGET,
            "met": best >= TARGET,
            "ratio": _ratio(best, TARGET),
        },
        "note": "loopback; Mosquitto, PostgreSQL, the workers and the publishers share the "
        "machine's cores with whatever else runs; committed = rows in ts_num, counted every "
        f"{POLL_S:g} s, from the first publish; composed ceiling = min(pass-through x "
        "readings per message, pg de-dup bulk load)",
    }
