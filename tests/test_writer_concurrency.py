"""Several writers on one PostgreSQL database, as several ingest workers are: overlapping
devices, keys and readings in different orders, roll-ups merged now and deferred.

Every reading is stored once, no writer meets a deadlock, and the roll-ups and latest
values are exactly what the stored readings say.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from fleetcore.db import Database, create_engine
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.postgres import PostgresServer
from tests.support.writer_db import make_devices, own_database, rows

WRITERS = 4
DEVICES = 8
KEYS = ("t0", "t1", "t2", "t3", "t4")
STAMPS = 300  # per series, 1 s apart: five 1-minute buckets
BASE_TS = 1_789_999_200_000 - 120_000  # two minutes before an hour boundary
Item = tuple[int, str, int]  # device index, key, ts


@pytest.fixture
async def database(postgres_server: PostgresServer | None) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database of this test's own, on the throwaway server."""
    database = await own_database(postgres_server, "writers", pool_size=4)
    try:
        yield database
    finally:
        await database.close()


def _value(device: int, key: str, ts: int) -> float:
    """The same value whichever writer sends the reading (whole numbers: sums are exact)."""
    return float((device * 31 + int(key[1:]) * 7 + ts // 1000) % 1000)


def _workload(seed: int) -> list[list[Item]]:
    """A writer's batches: a shuffled half-plus of all readings, cut at random sizes; any
    two writers share most readings, in different orders."""
    rng = random.Random(seed)
    items = [
        (d, k, BASE_TS + s * 1000)
        for d in range(DEVICES)
        for k in KEYS
        for s in range(STAMPS)
        if rng.random() < 0.7
    ]
    rng.shuffle(items)
    batches, start = [], 0
    while start < len(items):
        size = rng.randint(200, 2_000)
        batches.append(items[start : start + size])
        start += size
    return batches


def _submissions(
    batch: Sequence[Item], devices: list[uuid.UUID], org_id: uuid.UUID
) -> list[DeviceReadings]:
    by_device: dict[int, list[Reading]] = defaultdict(list)
    for d, k, ts in batch:
        by_device[d].append(Reading(k, ts, Kind.NUMBER, _value(d, k, ts)))
        if k == "t0":  # a text series too: its latest value is merged with its insert
            by_device[d].append(Reading("state", ts, Kind.TEXT, f"s{ts}"))
    return [DeviceReadings(devices[d], org_id, readings) for d, readings in by_device.items()]


async def _write_all(
    url: str, batches: list[list[Item]], devices: list[uuid.UUID], org_id: uuid.UUID
) -> int:
    """One writer with its own pool and caches, as another process would be; returns how
    many readings it stored."""
    database = Database(create_engine(url, pool_size=2))
    writer = TelemetryWriter(database.engine)
    stored = 0
    try:
        for n, batch in enumerate(batches, 1):
            result = await writer.write(
                _submissions(batch, devices, org_id), defer_rollups=n < len(batches)
            )
            stored += len(result.stored)
            assert sum(result.stored_per_item) == len(result.stored)
    finally:
        await database.close()
    return stored


async def _devices(database: Database) -> tuple[uuid.UUID, list[uuid.UUID]]:
    return await make_devices(database, DEVICES)


async def _rows(database: Database, sql: str) -> list[tuple[Any, ...]]:
    return await rows(database, sql)


# Roll-ups recomputed from the stored readings, in the roll-up tables' column order.
_FROM_RAW = (
    "SELECT n.series_id, n.ts - n.ts % {w} AS bucket, count(*), sum(n.value), min(n.value), "
    "max(n.value), min(n.ts), (array_agg(n.value ORDER BY n.ts))[1], max(n.ts), "
    "(array_agg(n.value ORDER BY n.ts DESC))[1] FROM ts_num AS n GROUP BY 1, 2 ORDER BY 1, 2"
)
_ROLLUP = (
    "SELECT series_id, bucket, cnt, total, vmin, vmax, first_ts, vfirst, last_ts, vlast "
    "FROM {table} ORDER BY 1, 2"
)


async def test_concurrent_writers_store_each_reading_once_without_deadlock(
    database: Database,
) -> None:
    org_id, devices = await _devices(database)
    url = database.engine.url.render_as_string(hide_password=False)
    workloads = [_workload(seed) for seed in range(WRITERS)]

    # A deadlock, or any other error, fails its writer and so this gather.
    stored = await asyncio.gather(*(_write_all(url, w, devices, org_id) for w in workloads))

    sent = {item for batches in workloads for batch in batches for item in batch}
    numbers_sent = len(sent)
    texts_sent = len({(d, ts) for d, k, ts in sent if k == "t0"})
    assert sum(stored) == numbers_sent + texts_sent  # each once, across all writers
    assert sum(len(b) for w in workloads for b in w) > 2 * numbers_sent  # they did overlap
    [(numbers, texts, series, keys, pending)] = await _rows(
        database,
        "SELECT (SELECT count(*) FROM ts_num), (SELECT count(*) FROM ts_text), "
        "(SELECT count(*) FROM ts_series), (SELECT count(*) FROM ts_keys), "
        "(SELECT count(*) FROM ts_rollup_pending)",
    )
    assert (numbers, texts) == (numbers_sent, texts_sent)
    assert (series, keys, pending) == (DEVICES * (len(KEYS) + 1), len(KEYS) + 1, 0)
    stored_values = await _rows(
        database,
        "SELECT d.name, k.name, n.ts, n.value FROM ts_num AS n "
        "JOIN ts_series AS s ON s.id = n.series_id JOIN ts_keys AS k ON k.id = s.key_id "
        "JOIN devices AS d ON d.id = s.device_id",
    )
    assert {(int(d[1:]), k, ts) for d, k, ts, _ in stored_values} == sent
    assert all(v == _value(int(d[1:]), k, ts) for d, k, ts, v in stored_values)

    for width, table in ((60_000, "ts_rollup_1m"), (3_600_000, "ts_rollup_1h")):
        expected = await _rows(database, _FROM_RAW.format(w=width))
        assert await _rows(database, _ROLLUP.format(table=table)) == expected
    assert len(await _rows(database, _ROLLUP.format(table="ts_rollup_1h"))) == 2 * DEVICES * 5
    latest = await _rows(
        database,
        "SELECT l.series_id, l.ts, coalesce(l.num::text, l.text) FROM ts_latest AS l ORDER BY 1",
    )
    newest = await _rows(
        database,
        "SELECT series_id, ts, value FROM (SELECT DISTINCT ON (series_id) series_id, ts, "
        "value::text FROM ts_num ORDER BY series_id, ts DESC) AS n UNION ALL "
        "SELECT * FROM (SELECT DISTINCT ON (series_id) series_id, ts, value FROM ts_text "
        "ORDER BY series_id, ts DESC) AS t ORDER BY 1",
    )
    assert latest == newest


async def test_busy_pipeline_defers_roll_ups_and_the_last_batch_merges_them(
    database: Database,
) -> None:
    org_id, devices = await _devices(database)
    pipeline = IngestPipeline(TelemetryWriter(database.engine), batch_size=1_000)
    await pipeline.start()
    try:
        # Queued at once: every batch but the last finds more waiting, and defers.
        futures = [
            pipeline.enqueue(
                DeviceReadings(
                    devices[n % DEVICES],
                    org_id,
                    [
                        Reading(k, BASE_TS + (n // DEVICES * 50 + i) * 1000, Kind.NUMBER, float(i))
                        for k in KEYS
                        for i in range(50)
                    ],
                )
            )
            for n in range(4 * DEVICES)
        ]
        outcomes = await asyncio.gather(*futures)
    finally:
        await pipeline.stop()
    assert sum(o.stored for o in outcomes) == 4 * DEVICES * len(KEYS) * 50
    # The last acknowledgement came after every roll-up and latest value was merged.
    expected = await _rows(database, _FROM_RAW.format(w=60_000))
    assert await _rows(database, _ROLLUP.format(table="ts_rollup_1m")) == expected
    assert sum(row[2] for row in expected) == 4 * DEVICES * len(KEYS) * 50
    [(latest_wrong, pending)] = await _rows(
        database,
        "SELECT (SELECT count(*) FROM ts_latest AS l JOIN (SELECT series_id, max(ts) AS ts "
        "FROM ts_num GROUP BY 1) AS n USING (series_id) WHERE l.ts <> n.ts), "
        "(SELECT count(*) FROM ts_rollup_pending)",
    )
    assert (latest_wrong, pending) == (0, 0)
