"""Days older than the daily retention become months: the `usage.rollup` job.

Whole months only, the oldest first, one transaction per month: the month's daily rows
(counters summed, levels their largest day) and its distinct active devices are added to
`usage_monthly`, then the month's daily rows and device days are deleted. A month is thus
either daily or monthly, never half of each, and the API answers it the same way
(service.py). Runs in the process that runs cluster jobs, once per tick (job leases).
The same job forgets the meters' flush ids older than store.FLUSH_IDS_KEPT_DAYS.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.config import Settings
from fleetcore.db import Database
from fleetcore.usage import store
from fleetcore.usage.kinds import LEVELS, UsageKind
from fleetcore.usage.models import UsageDaily, UsageDeviceDay, UsageMonthly
from fleetcore.usage.service import month_of, next_month

log = structlog.get_logger(__name__)

JOB_NAME = "usage.rollup"
INTERVAL_S = 3600.0


async def roll_up(database: Database, settings: Settings, *, now: datetime) -> int:
    """Roll every whole month older than the retention into monthly rows; months rolled."""
    async with database.session(write=True) as session:
        pruned = await store.prune_flushes(session, now - timedelta(days=store.FLUSH_IDS_KEPT_DAYS))
        await session.commit()
    if pruned:
        log.info("usage_flush_ids_pruned", rows=pruned)
    days = settings.usage_daily_retention_days
    if not days:
        return 0  # 0: daily rows are kept forever
    boundary = month_of(now.date() - timedelta(days=days))  # days before it: whole months
    rolled = 0
    while (month := await _oldest_month(database, boundary)) is not None:
        async with database.session(write=True) as session:
            await _roll_month(session, month)
            await session.commit()
        rolled += 1
        log.info("usage_month_rolled_up", month=month.isoformat())
    return rolled


async def _oldest_month(database: Database, boundary: date) -> date | None:
    async with database.session() as session:
        oldest = await session.scalar(
            select(func.min(UsageDaily.day)).where(UsageDaily.day < boundary)
        )
        devices = await session.scalar(
            select(func.min(UsageDeviceDay.day)).where(UsageDeviceDay.day < boundary)
        )
        await session.commit()
    found = [d for d in (oldest, devices) if d is not None]
    return month_of(min(found)) if found else None


async def _roll_month(session: AsyncSession, month: date) -> None:
    following = next_month(month)
    in_month = (UsageDaily.day >= month, UsageDaily.day < following)
    totals: dict[tuple[object, str, str], int] = {}
    daily = await session.execute(
        select(
            UsageDaily.organization_id, UsageDaily.kind, UsageDaily.transport, UsageDaily.n
        ).where(*in_month)
    )
    for org, kind, transport, n in daily.all():
        key = (org, kind, transport)
        totals[key] = max(totals.get(key, 0), n) if kind in LEVELS else totals.get(key, 0) + n
    devices = await session.execute(
        select(UsageDeviceDay.organization_id, func.count(func.distinct(UsageDeviceDay.device_id)))
        .where(UsageDeviceDay.day >= month, UsageDeviceDay.day < following)
        .group_by(UsageDeviceDay.organization_id)
    )
    for org, n in devices.all():
        totals[(org, str(UsageKind.DEVICES_ACTIVE), "")] = int(n)
    # A month rolled before (a late flush of an old day): merge with what it holds.
    existing = await session.execute(
        select(
            UsageMonthly.organization_id, UsageMonthly.kind, UsageMonthly.transport, UsageMonthly.n
        ).where(UsageMonthly.month == month)
    )
    for org, kind, transport, n in existing.all():
        key = (org, kind, transport)
        if key in totals:
            merged = kind in LEVELS or kind == UsageKind.DEVICES_ACTIVE
            totals[key] = max(totals[key], n) if merged else totals[key] + n
    rows = [
        {"organization_id": org, "month": month, "kind": kind, "transport": transport, "n": n}
        for (org, kind, transport), n in totals.items()
    ]
    insert = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
    for start in range(0, len(rows), 1000):
        statement = insert(UsageMonthly).values(rows[start : start + 1000])
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["organization_id", "month", "kind", "transport"],
                set_={"n": statement.excluded.n},
            )
        )
    await session.execute(delete(UsageDaily).where(*in_month))
    await session.execute(
        delete(UsageDeviceDay).where(UsageDeviceDay.day >= month, UsageDeviceDay.day < following)
    )
