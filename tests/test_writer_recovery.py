"""A writer that deferred its roll-ups and died: the next writer merges what it left logged.

The dead writer is a process of its own (tests/support/deferring_writer.py), killed with
SIGKILL after its deferred batches are committed. A writer started afterwards (a new engine,
caches empty) merges the logged numbers with its first write, whatever that write holds, so
the 1-minute and 1-hour roll-ups and the latest values equal an aggregation of the stored
readings from scratch.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fleetcore.db import Database, create_engine
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until
from tests.support.writer_db import make_devices, own_database, rows

DEAD_WRITER = Path(__file__).parent / "support" / "deferring_writer.py"
DEVICES = 3
LATER_TS = 1_789_999_200_000 + 600_000  # after every reading of the dead writer

# Roll-ups from the stored readings, in the roll-up tables' column order.
FROM_RAW = (
    "SELECT n.series_id, n.ts - n.ts % {w} AS bucket, count(*), sum(n.value), min(n.value), "
    "max(n.value), min(n.ts), (array_agg(n.value ORDER BY n.ts))[1], max(n.ts), "
    "(array_agg(n.value ORDER BY n.ts DESC))[1] FROM ts_num AS n GROUP BY 1, 2 ORDER BY 1, 2"
)
ROLLUP = (
    "SELECT series_id, bucket, cnt, total, vmin, vmax, first_ts, vfirst, last_ts, vlast "
    "FROM {table} ORDER BY 1, 2"
)
ROLLUPS = ((60_000, "ts_rollup_1m"), (3_600_000, "ts_rollup_1h"))
# Numeric latest values that are not the newest stored reading of their series.
WRONG_LATEST = (
    "SELECT count(*) FROM (SELECT DISTINCT ON (series_id) series_id, ts, value FROM ts_num "
    "ORDER BY series_id, ts DESC) AS n LEFT JOIN ts_latest AS l USING (series_id) "
    "WHERE l.ts IS DISTINCT FROM n.ts OR l.num IS DISTINCT FROM n.value"
)


@pytest.fixture
async def database(postgres_server: PostgresServer | None) -> AsyncIterator[Database]:
    """A migrated PostgreSQL database of this test's own, on the throwaway server."""
    database = await own_database(postgres_server, "recovery", pool_size=2)
    try:
        yield database
    finally:
        await database.close()


async def _devices(database: Database) -> tuple[uuid.UUID, list[uuid.UUID]]:
    return await make_devices(database, DEVICES)


async def _rows(database: Database, sql: str) -> list[tuple[Any, ...]]:
    return await rows(database, sql)


async def _pending(database: Database) -> int:
    [(count,)] = await _rows(database, "SELECT count(*) FROM ts_rollup_pending")
    return int(count)


async def _rollups_match_raw(database: Database) -> bool:
    for width, table in ROLLUPS:
        if await _rows(database, ROLLUP.format(table=table)) != await _rows(
            database, FROM_RAW.format(w=width)
        ):
            return False
    [(wrong,)] = await _rows(database, WRONG_LATEST)
    return wrong == 0


async def _write_and_die(url: str, org_id: uuid.UUID, devices: list[uuid.UUID]) -> None:
    """Run the deferring writer in a process of its own; kill it once it has written."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEAD_WRITER),
        url,
        str(org_id),
        *map(str, devices),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line == b"deferred\n", line
    finally:
        process.kill()
        await process.wait()


def _later(org_id: uuid.UUID, device: uuid.UUID, kind: Kind) -> list[DeviceReadings]:
    value: Any = 7.0 if kind is Kind.NUMBER else "idle"
    return [DeviceReadings(device, org_id, [Reading("later", LATER_TS, kind, value)])]


@pytest.mark.parametrize(
    ("kind", "defer"),
    [(Kind.TEXT, False), (Kind.NUMBER, True)],
    ids=["text-batch-merged-before-commit", "deferred-number-batch-merged-in-background"],
)
async def test_new_writer_merges_what_a_killed_writer_left_deferred(
    database: Database, kind: Kind, defer: bool
) -> None:
    org_id, devices = await _devices(database)
    url = database.engine.url.render_as_string(hide_password=False)

    await _write_and_die(url, org_id, devices)

    # It died with numbers logged and not merged: the roll-ups are behind the readings.
    assert await _pending(database) > 0
    assert not await _rollups_match_raw(database)
    [(stored,)] = await _rows(database, "SELECT count(*) FROM ts_num")
    assert stored == DEVICES * 2 * 30  # 20 + 5 + 5 new seconds, two keys

    # A new writer, as a restarted worker has, whose first batch holds no number of the
    # dead writer's: text merged with its insert, or numbers deferred (the pipeline busy).
    fresh = Database(create_engine(url, pool_size=2))
    try:
        writer = TelemetryWriter(fresh.engine)
        result = await writer.write(_later(org_id, devices[0], kind), defer_rollups=defer)
        assert len(result.stored) == 1
        # Merged before the write returned, or by the merge it started in the background.
        await wait_until(lambda: _pending_is_zero(database), within=10)
        assert await _rollups_match_raw(database)
        [(buckets_1m, buckets_1h)] = await _rows(
            database,
            "SELECT (SELECT count(*) FROM ts_rollup_1m), (SELECT count(*) FROM ts_rollup_1h)",
        )
        later = 1 if kind is Kind.NUMBER else 0  # its series' one bucket of each
        assert (buckets_1m, buckets_1h) == (4 * DEVICES * 2 + later, 2 * DEVICES * 2 + later)
        await writer.settle()
    finally:
        await fresh.close()


async def _pending_is_zero(database: Database) -> bool:
    return await _pending(database) == 0
