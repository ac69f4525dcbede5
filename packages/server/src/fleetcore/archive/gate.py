"""Retention's archive rule: raw readings of a day go only once that day is archived.

A day qualifies when its archive record is current (not stale), not purged yet, and the day
ended before the organization's raw cut-off. Retention claims it first (purged_at set by a
compare-and-set that a re-archive's claim excludes), then counts the readings stored for the
day: the same count as archived, and they are deleted; another count (late readings since)
releases the claim and marks the archive stale, so the job archives the day again and a
later run deletes it.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select, update

from fleetcore.archive.models import TelemetryArchive
from fleetcore.archive.reading import count_day, day_bounds
from fleetcore.db import Database, utcnow
from fleetcore.telemetry.models import PACKED_NUM, VALUE_TABLES
from fleetcore.telemetry.partitions import DAY_MS, day_of

if TYPE_CHECKING:
    from fleetcore.telemetry.retention import ArchivedDays, Purge

log = structlog.get_logger(__name__)


async def purgeable(
    database: Database, org_id: uuid.UUID, cutoff_ms: int
) -> list[TelemetryArchive]:
    """Current, unpurged archives of whole days that ended by `cutoff_ms`."""
    last = day_of(cutoff_ms - DAY_MS)  # its end (start + DAY_MS) is at or before the cut-off
    async with database.session() as session:
        query = select(TelemetryArchive).where(
            TelemetryArchive.organization_id == org_id,
            TelemetryArchive.day <= last,
            TelemetryArchive.stale_at.is_(None),
            TelemetryArchive.purged_at.is_(None),
            TelemetryArchive.manifest_sha256 != "",
        )
        return list((await session.scalars(query.order_by(TelemetryArchive.day))).all())


async def _set(database: Database, archive_id: uuid.UUID, *, claim: bool, **values: object) -> bool:
    async with database.session(write=True) as session:
        query = update(TelemetryArchive).where(TelemetryArchive.id == archive_id)
        if claim:
            query = query.where(
                TelemetryArchive.stale_at.is_(None), TelemetryArchive.purged_at.is_(None)
            )
        done = bool((await session.execute(query.values(**values))).rowcount)  # type: ignore[attr-defined]
        await session.commit()
    return done


def archived_days(database: Database) -> ArchivedDays:
    """What telemetry retention calls for organizations whose policy requires archives."""

    async def purge(purge: Purge, org_id: uuid.UUID, cutoff_ms: int) -> None:
        await purge_archived_days(database, purge, org_id, cutoff_ms)

    return purge


async def purge_archived_days(
    database: Database, purge: Purge, org_id: uuid.UUID, cutoff_ms: int
) -> None:
    """Delete the raw readings of every qualifying archived day of the organization."""
    for record in await purgeable(database, org_id, cutoff_ms):
        if not await _set(database, record.id, claim=True, purged_at=utcnow()):
            continue  # being archived again meanwhile
        stored = await count_day(database, org_id, record.day)
        if stored != record.rows:
            await _set(database, record.id, claim=False, purged_at=None, stale_at=utcnow())
            purge.report.archive_mismatches += 1
            log.warning(
                "archive_mismatch",
                org=str(org_id),
                day=record.day.isoformat(),
                archived=record.rows,
                stored=stored,
            )
            continue
        start, end = day_bounds(record.day)
        for table in VALUE_TABLES.values():
            await purge.rows(table.name, "ts", org_id, end, since=start)
        # Packed hours of the day (telemetry/compaction.py): a day is whole hours.
        await purge.rows(PACKED_NUM.name, "block", org_id, end, since=start)
        purge.report.archived_days_purged += 1
