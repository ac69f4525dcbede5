"""Dead letters are kept for diagnosis, not for ever: a job deletes the old ones.

Rows older than `dead_letters_retention_days`, then all but the newest
`dead_letters_max_rows`, are deleted oldest first in chunks of one short transaction each,
so a table grown by a flood shrinks without holding SQLite's write lock for long. Ids grow
with arrival (one writer, in order), so "oldest first" walks the primary key.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import ColumnElement, delete, select

from fleetcore.config import Settings
from fleetcore.db import Database, utcnow
from fleetcore.deadletters.models import DeadLetter
from fleetcore.jobs import JobScheduler

log = structlog.get_logger(__name__)

CHUNK_ROWS = 10_000

PRUNED = Counter(
    "fleetcore_dead_letters_pruned_total",
    "Dead letters deleted by the prune job, by cause (age or count).",
    ["cause"],
)


async def prune(
    database: Database,
    *,
    retention_days: int,
    max_rows: int,
    chunk_rows: int = CHUNK_ROWS,
    now: datetime | None = None,
) -> int:
    """Delete dead letters older than `retention_days` (0: none by age) and all but the
    newest `max_rows` (0: no cap); returns how many were deleted."""
    deleted = 0
    if retention_days:
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        deleted += await _delete(database, DeadLetter.received_at < cutoff, chunk_rows, "age")
    if max_rows:
        async with database.session() as session:
            newest_dropped = await session.scalar(
                select(DeadLetter.id).order_by(DeadLetter.id.desc()).offset(max_rows).limit(1)
            )
        if newest_dropped is not None:
            deleted += await _delete(database, DeadLetter.id <= newest_dropped, chunk_rows, "count")
    if deleted:
        log.info("dead_letters_pruned", deleted=deleted)
    return deleted


async def _delete(
    database: Database, condition: ColumnElement[bool], chunk_rows: int, cause: str
) -> int:
    total = 0
    while True:
        chunk = select(DeadLetter.id).where(condition).order_by(DeadLetter.id).limit(chunk_rows)
        async with database.session(write=True) as session:
            result = await session.execute(
                delete(DeadLetter).where(DeadLetter.id.in_(chunk)),
                execution_options={"synchronize_session": False},
            )
            await session.commit()
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        total += count
        PRUNED.labels(cause).inc(count)
        if count < chunk_rows:
            return total


def register_job(jobs: JobScheduler, database: Database, settings: Settings) -> None:
    """Prune every `dead_letters_prune_interval_s`."""

    async def prune_dead_letters() -> None:
        await prune(
            database,
            retention_days=settings.dead_letters_retention_days,
            max_rows=settings.dead_letters_max_rows,
        )

    jobs.register("dead-letters.prune", settings.dead_letters_prune_interval_s, prune_dead_letters)
