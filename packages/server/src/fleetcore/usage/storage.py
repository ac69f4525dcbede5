"""The storage snapshot (`usage.storage` job): telemetry rows and bytes, media bytes per org.

Rows are counted exactly (each value table joined to its series, packed hours by their
reading counts). Bytes are an estimate on both databases: each table's size on disk, indexes
included (SQLite: the pages of the table and its indexes from `dbstat`; PostgreSQL:
`pg_total_relation_size` of the table and its partitions, TOAST too) shared between
organizations by their rows, i.e. rows x the table's average row size. Media bytes are exact
(file and thumbnail sizes of stored media; a pending upload holds none).
The latest snapshot of a day is its level (store.set_levels).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Database
from fleetcore.media.models import Media
from fleetcore.telemetry.models import PACKED_NUM, VALUE_TABLES, Series
from fleetcore.usage import store
from fleetcore.usage.kinds import UsageKind

log = structlog.get_logger(__name__)

JOB_NAME = "usage.storage"
SQLITE_ROW_BYTES = 32  # without dbstat: (series_id, ts, value) and its b-tree share
# The table's pages and its indexes' (as pg_total_relation_size counts them).
_SQLITE_BYTES = (
    "SELECT sum(pgsize) FROM dbstat WHERE name IN "
    "(SELECT name FROM sqlite_master WHERE tbl_name = :t)"
)


async def snapshot(database: Database, *, now: datetime) -> dict[UsageKind, dict[uuid.UUID, int]]:
    """Take today's storage levels of every organization and record them."""
    rows: dict[uuid.UUID, int] = defaultdict(int)
    size: dict[uuid.UUID, float] = defaultdict(float)
    async with database.session() as session:
        for table in [*VALUE_TABLES.values(), PACKED_NUM]:
            counted = func.sum(table.c.n) if table is PACKED_NUM else func.count()
            per_org = await session.execute(
                select(Series.organization_id, counted)
                .select_from(table)
                .join(Series, Series.id == table.c.series_id)
                .group_by(Series.organization_id)
            )
            held = {org: int(n or 0) for org, n in per_org.all()}
            total = sum(held.values())
            if not total:
                continue
            stored = await _table_bytes(session, table.name, total)
            for org, n in held.items():
                rows[org] += n
                size[org] += stored * n / total
        media = await session.execute(
            select(Media.organization_id, func.sum(Media.bytes + Media.thumb_bytes)).group_by(
                Media.organization_id
            )
        )
        media_bytes = {org: int(n or 0) for org, n in media.all()}
        await session.commit()
    levels = {
        UsageKind.STORAGE_ROWS: dict(rows),
        UsageKind.STORAGE_BYTES: {org: round(b) for org, b in size.items()},
        UsageKind.MEDIA_BYTES: media_bytes,
    }
    async with database.session(write=True) as session:
        for kind, values in levels.items():
            await store.set_levels(session, now.date(), kind, values)
        await session.commit()
    log.info("usage_storage_snapshot", organizations=len(set(rows) | set(media_bytes)))
    return levels


async def _table_bytes(session: AsyncSession, table: str, rows: int) -> float:
    """A table's bytes on disk (estimated: see the module docstring)."""
    if session.get_bind().dialect.name == "postgresql":
        # pg_partition_tree: the table itself when it is not partitioned.
        value = await session.scalar(
            text("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(:t)"),
            {"t": table},
        )
        return float(value or 0)
    try:
        async with session.begin_nested():
            value = await session.scalar(text(_SQLITE_BYTES), {"t": table})
        return float(value or 0)
    except Exception:  # a SQLite built without dbstat
        return float(rows * SQLITE_ROW_BYTES)
