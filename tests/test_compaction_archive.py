"""Archives of compacted days (PostgreSQL): a packed day is archived with every reading,
the archive gate's purge removes its packed hours, and a restore brings it back exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetcore.archive.gate import archived_days
from fleetcore.archive.reading import count_day
from fleetcore.archive.restore import restore_day
from fleetcore.archive.writer import archive_day
from fleetcore.db import Database
from fleetcore.telemetry.compaction import run_compaction
from fleetcore.telemetry.retention import run_retention
from tests.support.postgres import PostgresServer
from tests.support.writer_db import own_database, rows
from tests.test_archive import (
    DEFAULTS,
    GATED,
    _old_day,
    _org,
    _readings,
    _rollups,
    _same_rollups,
    _snapshot,
    _store,
    _submit,
    _write,
)


@pytest.fixture
async def database(postgres_server: PostgresServer | None) -> AsyncIterator[Database]:
    database = await own_database(postgres_server, "compact_archive", pool_size=4)
    try:
        yield database
    finally:
        await database.close()


async def _packed(database: Database) -> int:
    return int((await rows(database, "SELECT coalesce(sum(n), 0) FROM ts_num_packed"))[0][0])


async def test_a_compacted_day_archives_purges_and_restores_whole(
    database: Database, tmp_path: Path
) -> None:
    db, store = database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    for device_id in devices:
        await _write(db, org_id, device_id, _readings(day, 1_200))
    readings, rollups = await _snapshot(db, org_id, day), await _rollups(db, org_id, day)
    numbers = sum(1 for r in readings if r[3] == 1)
    assert (await run_compaction(db.engine, after_days=2)).readings == numbers
    assert await _packed(db) == numbers
    assert await _snapshot(db, org_id, day) == readings

    archived = await archive_day(db, store, org_id=org_id, day=day)
    assert archived.rows == len(readings)  # packed readings counted and written
    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert report.archived_days_purged == 1  # the stored count matched, packed included
    assert await count_day(db, org_id, day) == 0
    assert await _packed(db) == 0

    restored = await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    assert (restored.stored, restored.duplicates) == (len(readings), 0)
    assert await _snapshot(db, org_id, day) == readings
    _same_rollups(rollups, await _rollups(db, org_id, day))
    await run_compaction(db.engine, after_days=2)  # packed again: the same day
    assert await _packed(db) == numbers
    assert await _snapshot(db, org_id, day) == readings
    again = await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    assert (again.stored, again.duplicates) == (0, len(readings))  # de-duplicated against packed
