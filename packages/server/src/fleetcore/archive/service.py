"""The archive list an organization sees, and the job that archives closed days.

The job archives, per organization, every day from its first reading up to the last closed
one (ended `archive_after_days` ago) that has no archive yet or whose archive is stale
(re-archive, or late readings found by retention), at most `archive_max_days_per_run` days
a run so a backlog of years is worked off a tick at a time. Days without readings are
archived too (an empty manifest), so they are not looked at again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.archive.models import TelemetryArchive
from fleetcore.archive.reading import org_series
from fleetcore.archive.store import build_archive_store
from fleetcore.archive.writer import archive_day
from fleetcore.auth.models import Organization
from fleetcore.auth.principal import Principal
from fleetcore.config import Settings
from fleetcore.db import Database
from fleetcore.errors import Invalid
from fleetcore.jobs import JobScheduler
from fleetcore.media.store import MediaStore
from fleetcore.telemetry.partitions import DAY_MS, day_of
from fleetcore.telemetry.queries import read_rows

log = structlog.get_logger(__name__)

JOB_NAME = "telemetry-archive"
MAX_LISTED = 1000


async def list_archives(
    session: AsyncSession,
    principal: Principal,
    *,
    start: date | None,
    end: date | None,
    limit: int = MAX_LISTED,
) -> list[TelemetryArchive]:
    """The caller's organization's archived days in [start, end], newest first."""
    if start is not None and end is not None and start > end:
        raise Invalid("from must not be after to", code="INVALID_RANGE", details={"field": "from"})
    query = select(TelemetryArchive).where(TelemetryArchive.organization_id == principal.org_id)
    if start is not None:
        query = query.where(TelemetryArchive.day >= start)
    if end is not None:
        query = query.where(TelemetryArchive.day <= end)
    query = query.order_by(TelemetryArchive.day.desc()).limit(limit)
    return list((await session.scalars(query)).all())


def last_closed_day(now_ms: int, after_days: int) -> date:
    """The newest day that ended at least `after_days` days before `now_ms`."""
    return day_of(now_ms - after_days * DAY_MS) - timedelta(days=1)


async def due_days(database: Database, org_id: uuid.UUID, *, until: date, limit: int) -> list[date]:
    """Days up to `until` with readings possible and no current archive, oldest first."""
    by_device = await org_series(database, org_id)
    series = [s for refs in by_device.values() for s in refs]
    if not series or limit <= 0:
        return []
    end = int(datetime(until.year, until.month, until.day, tzinfo=UTC).timestamp() * 1000) + DAY_MS
    async with database.connect() as connection:
        first = await read_rows(connection, series, 0, end, limit=1)
        done = set(
            (
                await connection.execute(
                    select(TelemetryArchive.day).where(
                        TelemetryArchive.organization_id == org_id,
                        TelemetryArchive.stale_at.is_(None),
                    )
                )
            ).scalars()
        )
    if not first:
        return []
    days: list[date] = []
    day = day_of(first[0].ts)
    while day <= until and len(days) < limit:
        if day not in done:
            days.append(day)
        day += timedelta(days=1)
    return days


@dataclass(slots=True)
class ArchiveRun:
    """What one run of the job archived."""

    days: int = 0
    rows: int = 0
    bytes: int = 0


async def run_archive(
    database: Database, store: MediaStore, settings: Settings, *, now_ms: int
) -> ArchiveRun:
    """Archive every organization's due days, `archive_max_days_per_run` at most."""
    until = last_closed_day(now_ms, settings.archive_after_days)
    run = ArchiveRun()
    async with database.session() as session:
        orgs = list((await session.scalars(select(Organization.id))).all())
    for org_id in orgs:
        budget = settings.archive_max_days_per_run - run.days
        for day in await due_days(database, org_id, until=until, limit=budget):
            result = await archive_day(
                database,
                store,
                org_id=org_id,
                day=day,
                rows_per_file=settings.archive_rows_per_file,
            )
            run.days += 1
            run.rows += result.rows
            run.bytes += result.bytes
    if run.days:
        log.info("archive_run", days=run.days, rows=run.rows, bytes=run.bytes)
    return run


def register_job(jobs: JobScheduler, database: Database, settings: Settings) -> None:
    """The archive job, when archive_enabled."""
    if not settings.archive_enabled:
        return
    store = build_archive_store(settings)

    async def archive() -> None:
        now = int(datetime.now(UTC).timestamp() * 1000)
        await run_archive(database, store, settings, now_ms=now)

    jobs.register(JOB_NAME, settings.archive_interval_s, archive)
