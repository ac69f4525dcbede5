"""Compaction while several writers send late readings of the hours it packs (both
databases): overlapping readings in different orders, some already raw, some already
packed, some new.

Every reading ends up stored once, and the roll-ups and latest values are exactly what the
stored readings say (the rule is in telemetry/packed.py).
"""

# ruff: noqa: S608  # the test's own SQL, no input

from __future__ import annotations

import asyncio
import random
import shutil
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetcore import migrate
from fleetcore.db import Database
from fleetcore.telemetry import partitions
from fleetcore.telemetry.compaction import cutoff_for, run_compaction
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.postgres import PostgresServer
from tests.support.writer_db import make_devices, own_database, rows

DAY = partitions.DAY_MS
NOW = 1_796_000_000_000
BASE = cutoff_for(NOW, 2) - DAY + 3 * 3_600_000 - 60_000  # across hour boundaries of a packed day
DEVICES = 3
KEYS = ("a", "b")
STAMPS = 1_200  # per series, 10 s apart: 3⅓ hours
WRITERS = 3


@pytest.fixture
async def database(
    backend: str, postgres_server: PostgresServer | None, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[Database]:
    if backend == "postgresql":
        database = await own_database(postgres_server, "compact_conc", pool_size=8)
        await partitions.ensure_partitions(database.engine, days_ahead=3, now_ms=BASE)
    else:  # one writer at a time there: the compactor's chunks and late batches take turns
        shutil.copyfile(sqlite_template, tmp_path / "c.db")
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool_size=8)
        await migrate.upgrade(database)
    try:
        yield database
    finally:
        await database.close()


def _value(device: int, key: str, ts: int) -> float:
    """The same value whoever sends the reading (whole numbers: sums are exact)."""
    return float((device * 31 + ord(key) * 7 + ts // 10_000) % 1000)


Item = tuple[int, str, int]


def _batches(items: list[Item], rng: random.Random) -> list[list[Item]]:
    items = items[:]
    rng.shuffle(items)
    out, at = [], 0
    while at < len(items):
        size = rng.randrange(50, 400)
        out.append(items[at : at + size])
        at += size
    return out


async def _send(
    database: Database, org_id: uuid.UUID, devices: list[uuid.UUID], batches: list[list[Item]]
) -> tuple[int, int]:
    writer = TelemetryWriter(database.engine)
    stored = duplicates = 0
    for batch in batches:
        by_device: dict[int, list[Reading]] = defaultdict(list)
        for d, k, ts in batch:
            by_device[d].append(Reading(k, ts, Kind.NUMBER, _value(d, k, ts)))
        result = await writer.write(
            [DeviceReadings(devices[d], org_id, r) for d, r in by_device.items()]
        )
        stored += len(result.stored)
        duplicates += result.duplicates
        await asyncio.sleep(0)
    await writer.settle()
    return stored, duplicates


async def test_compaction_beside_late_writers_loses_and_doubles_nothing(
    database: Database, backend: str
) -> None:
    org_id, devices = await make_devices(database, DEVICES)
    every = [(d, k, BASE + s * 10_000) for d in range(DEVICES) for k in KEYS for s in range(STAMPS)]
    rng = random.Random(7)
    first = [item for item in every if rng.random() < 0.4]
    await _send(database, org_id, devices, _batches(first, rng))
    # Packed before the writers start: some of what they send meets packed rows.
    await run_compaction(database.engine, after_days=2, now_ms=NOW, chunk_readings=500)
    half = [item for item in every if rng.random() < 0.5]
    await _send(database, org_id, devices, _batches(half, rng))  # raw again, late
    workloads = [
        _batches([item for item in every if rng.random() < 0.7], random.Random(seed))
        for seed in range(WRITERS)
    ]
    done = asyncio.Event()

    async def compact_until_done() -> int:
        runs = 0
        while not done.is_set() or runs < 2:
            await run_compaction(database.engine, after_days=2, now_ms=NOW, chunk_readings=300)
            runs += 1
        return runs

    compactor = asyncio.create_task(compact_until_done())
    sent = await asyncio.gather(*(_send(database, org_id, devices, w) for w in workloads))
    done.set()
    assert await compactor >= 2
    await run_compaction(database.engine, after_days=2, now_ms=NOW)
    union = set(first) | set(half) | {item for w in workloads for b in w for item in b}
    # Each reading stored once in all: by the writers' own counts and in the database.
    assert sum(s for s, _ in sent) == len(union - set(first) - set(half))
    assert (await rows(database, "SELECT count(*) FROM ts_num"))[0][0] == 0
    # Every packed reading as (series_id, ts, v), in each database's own encoding.
    cells = (
        "WITH c AS (SELECT p.series_id, p.block + u.o AS ts, u.v FROM ts_num_packed p, "
        "unnest(p.offs, p.vals) AS u (o, v)) "
        if backend == "postgresql"
        else "WITH c AS (SELECT p.series_id, p.block + CAST(u.key AS INTEGER) AS ts, "
        "u.value AS v FROM ts_num_packed p, json_each(fc_inflate(p.vals)) AS u) "
    )
    packed = await rows(database, cells + "SELECT series_id, ts, v FROM c")
    assert len(packed) == len({(sid, ts) for sid, ts, _ in packed}) == len(union)
    # Roll-ups and latest agree with the stored readings exactly.
    hourly = await rows(
        database,
        cells + "SELECT series_id, ts / 3600000 * 3600000, count(*), sum(v) "
        "FROM c GROUP BY 1, 2 ORDER BY 1, 2",
    )
    rolled = await rows(
        database, "SELECT series_id, bucket, cnt, total FROM ts_rollup_1h ORDER BY 1, 2"
    )
    assert rolled == hourly
    newest = await rows(
        database,
        cells + "SELECT series_id, ts, v FROM c WHERE ts = "
        "(SELECT max(ts) FROM c AS n WHERE n.series_id = c.series_id) ORDER BY series_id",
    )
    latest = await rows(database, "SELECT series_id, ts, num FROM ts_latest ORDER BY series_id")
    assert latest == newest
