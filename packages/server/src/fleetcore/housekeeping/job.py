"""The housekeeping job: every target's expired rows, chunk by chunk, then the dead-letter cap.

Runs every `housekeeping_interval_s` in the process that runs cluster jobs (roles.RUNS_IN),
once per tick across processes (fleetcore.job_leases) and one run at a time (purge.py).
Each organization's rows are deleted by its own days where it may decide them
(service.py), by the platform default otherwise; 0 keeps a table's rows forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import BigInteger, Uuid, select
from sqlalchemy.types import TypeEngine

from fleetcore.auth.models import Organization
from fleetcore.config import Settings
from fleetcore.db import Database, UTCDateTime, utcnow
from fleetcore.deadletters.models import DeadLetter
from fleetcore.housekeeping.models import RetentionOverride
from fleetcore.housekeeping.purge import delete_all, delete_chunk, single_runner
from fleetcore.housekeeping.targets import TARGETS, Target, credential_grace
from fleetcore.jobs import JobScheduler

log = structlog.get_logger(__name__)

JOB_NAME = "housekeeping.retention"

ROWS_DELETED = Counter(
    "fleetcore_housekeeping_rows_deleted_total",
    "Rows removed by the housekeeping job, by table (dead_letters: by age and by the cap).",
    ["table"],
)


@dataclass(slots=True)
class Report:
    """What one run removed, by table."""

    rows_deleted: dict[str, int] = field(default_factory=dict)
    skipped: bool = False  # another process holds the runner lock


class _Run:
    def __init__(self, database: Database, settings: Settings, now: datetime) -> None:
        self.database = database
        self.settings = settings
        self.now = now
        self.chunk_rows = settings.housekeeping_chunk_rows
        self.report = Report()

    def cutoff(self, target: Target, days: int) -> object:
        """The oldest time kept: `days` ago (credentials: also past any access token's life)."""
        at = self.now - timedelta(days=days)
        if target.table == "refresh_tokens":
            # A session is live while one row of its family is unrevoked (auth.deps): keep a
            # row until no access token it vouches for can still be unexpired.
            at -= credential_grace(self.settings)
        return int(at.timestamp() * 1000) if target.ms else at

    async def purge(self, target: Target, condition: str, days: int, **params: Any) -> None:
        if not days:
            return  # 0: kept forever
        types: dict[str, TypeEngine[Any]] = {
            "cutoff": BigInteger() if target.ms else UTCDateTime(),
            "org": Uuid(),
        }
        statement = delete_chunk(
            target.table,
            f"{target.age} AND {condition}" if condition else target.age,
            dialect=self.database.dialect,
            types=types,
        )
        params["cutoff"] = self.cutoff(target, days)
        await self.count(
            target.table,
            await delete_all(self.database, statement, params, chunk_rows=self.chunk_rows),
        )

    async def count(self, table: str, deleted: int) -> None:
        if deleted:
            ROWS_DELETED.labels(table).inc(deleted)
            self.report.rows_deleted[table] = self.report.rows_deleted.get(table, 0) + deleted


async def run_housekeeping(
    database: Database, settings: Settings, *, now: datetime | None = None
) -> Report:
    """Delete every target's expired rows; then dead letters beyond the newest
    `dead_letters_max_rows`."""
    run = _Run(database, settings, now or utcnow())
    async with single_runner(database) as mine:
        if not mine:
            run.report.skipped = True
            return run.report
        days_by_org = await _days_by_org(database)
        for target in TARGETS:
            default = target.default_days(settings)
            if target.org is None:
                await run.purge(target, "", default)
                continue
            for org_id, own in days_by_org.items():
                days = own.get(target.table, default) if target.overridable else default
                await run.purge(target, target.org, days, org=org_id)
            if target.orphans is not None:
                await run.purge(target, target.orphans, default)
        await run.count("dead_letters", await _cap_dead_letters(run))
    if run.report.rows_deleted:
        log.info("housekeeping_applied", rows_deleted=run.report.rows_deleted)
    return run.report


async def _days_by_org(database: Database) -> dict[uuid.UUID, dict[str, int]]:
    """Every organization, with the days it set for itself (table -> days)."""
    query = select(Organization.id, RetentionOverride.table_name, RetentionOverride.days).outerjoin(
        RetentionOverride, RetentionOverride.organization_id == Organization.id
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    by_org: dict[uuid.UUID, dict[str, int]] = {}
    for org_id, table, days in rows:
        own = by_org.setdefault(org_id, {})
        if table is not None:
            own[table] = days
    return by_org


async def _cap_dead_letters(run: _Run) -> int:
    """All but the newest `dead_letters_max_rows` dead letters (0: no cap), oldest first:
    a flood from many senders shrinks back without waiting for its rows to age."""
    max_rows = run.settings.dead_letters_max_rows
    if not max_rows:
        return 0
    async with run.database.session() as session:
        newest_dropped = await session.scalar(
            select(DeadLetter.id).order_by(DeadLetter.id.desc()).offset(max_rows).limit(1)
        )
    if newest_dropped is None:
        return 0
    statement = delete_chunk(
        "dead_letters", "id <= :last", dialect=run.database.dialect, types={"last": BigInteger()}
    )
    return await delete_all(
        run.database, statement, {"last": newest_dropped}, chunk_rows=run.chunk_rows
    )


def register_job(jobs: JobScheduler, database: Database, settings: Settings) -> None:
    """Housekeeping every `housekeeping_interval_s`."""

    async def housekeeping() -> None:
        await run_housekeeping(database, settings)

    jobs.register(JOB_NAME, settings.housekeeping_interval_s, housekeeping)
