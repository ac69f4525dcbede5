"""The ordered lane through an external Mosquitto: attribute writes, each device's in a row,
through two `fleetcore serve --role ingest` workers and PostgreSQL; one worker holds the lane
(fleetcore.external_broker.lane) and takes them all.

A run: PUBLISHERS processes (paho-mqtt, QoS 1, MQTT 5) publish WRITES client-attribute
writes `{"seq": n}` per device on `devices/{id}/attributes`, the devices in turn, n rising.
The run ends at the poll that sees every write stored (each bumps its device's client
version); the rate is the writes over the time from the first publish. Then: how many devices
ended on the last value they sent (a device whose writes were stored out of order ends on an
earlier one).

Why it matters: every ordered message of a share group goes through the one process holding
the lane, so this rate is the group's ceiling for attribute and status traffic, whatever the
number of workers; telemetry is spread over all of them (bench/external_ingest.py).
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from tests.support.postgres import PostgresServer

from bench.external_ingest import _cpu, _fleet, _machine_busy_s, workers
from bench.mosquitto_load import Broker, Publishers, mosquitto, spread
from bench.telemetry_ingest import asyncpg_dsn

PUBLISHERS = 2
WORKERS = 2
WRITES = 25  # per device and run
RUNS = 3
POLL_S = 0.1
STALL_S = 30.0

_WRITES_SEEN = (
    "SELECT coalesce(sum(version), 0) FROM device_attribute_versions WHERE scope = 'client'"
)
_ON_LAST = (
    "SELECT count(*) FROM device_attributes "
    "WHERE scope = 'client' AND key = 'seq' AND value::text = $1"
)


def _write(devices: Sequence[str], first: int, i: int) -> tuple[str, bytes]:
    """Message i of a publisher: its devices in turn, each device's seq one higher per round."""
    device = devices[i % len(devices)]
    return f"devices/{device}/attributes", orjson.dumps({"seq": first + i // len(devices)})


async def _stored(dsn: str, publishers: Publishers, devices: int, last: int) -> dict[str, Any]:
    """Start the publishers; poll until every write is stored (each one bumps its device's
    client-attribute version); then how many devices ended on the last value they sent."""
    connection = await asyncpg.connect(dsn)
    try:
        before = await connection.fetchval(_WRITES_SEEN)
        expected, seen, progress_at = devices * WRITES, 0, time.monotonic()
        publishers.start()
        while seen < expected:
            await asyncio.sleep(POLL_S)
            now_seen = await connection.fetchval(_WRITES_SEEN) - before
            now = time.monotonic()
            if now_seen != seen:
                seen, progress_at = now_seen, now
            elif now - progress_at > STALL_S:
                raise RuntimeError(f"{expected - seen} of {expected} writes not stored")
        done_at = time.monotonic()
        on_last = await connection.fetchval(_ON_LAST, str(last))
    finally:
        await connection.close()
    published = await asyncio.get_running_loop().run_in_executor(None, publishers.wait)
    return {"done_at": done_at, "on_last_write": on_last, **published}


def lane_run(
    broker: Broker, url: str, devices: Sequence[str], pids: Sequence[int], first: int
) -> dict[str, float]:
    """WRITES writes per device through the workers: the rate and who used the cores."""
    shares = [devices[p::PUBLISHERS] for p in range(PUBLISHERS)]
    counts = [len(share) * WRITES for share in shares]
    makes = [functools.partial(_write, share, first) for share in shares]
    publishers = Publishers(broker, counts, makes)
    cpu = (_cpu(pids), _machine_busy_s())
    outcome = asyncio.run(_stored(asyncpg_dsn(url), publishers, len(devices), first + WRITES - 1))
    seconds = outcome["done_at"] - outcome["first_publish_at"]
    return {
        "ordered_messages_per_s": len(devices) * WRITES / seconds,
        "publish_messages_per_s": outcome["publish_messages_per_s"],
        "worker_cores": (_cpu(pids) - cpu[0]) / seconds,
        "machine_busy_cores": (_machine_busy_s() - cpu[1]) / seconds,
        "devices_on_their_last_write": outcome["on_last_write"],
    }


def run() -> dict[str, Any]:
    """RUNS runs of WRITES attribute writes per device through WORKERS workers."""
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("lane")
        devices = asyncio.run(_fleet(url))
        runs = []
        with (
            tempfile.TemporaryDirectory() as tmp,
            mosquitto(PUBLISHERS) as broker,
            workers(broker, url, WORKERS, Path(tmp)) as processes,
        ):
            pids = [p.pid for p in processes]
            lane_run(broker, url, devices, pids, first=0)  # warm-up: each device's first write
            for n in range(RUNS):
                runs.append(lane_run(broker, url, devices, pids, first=(n + 1) * WRITES))
                print(f"  run {n + 1}: {runs[-1]}", flush=True)
    finally:
        server.stop()
    return {
        "name": "external_lane",
        "devices": len(devices),
        "workers": WORKERS,
        "writes_per_device_and_run": WRITES,
        **{key: spread([round(r[key], 2) for r in runs]) for key in runs[0]},
        "note": "loopback; one worker holds the lane and stores every attribute write; the "
        "other acknowledges its shared copies unhandled",
    }
