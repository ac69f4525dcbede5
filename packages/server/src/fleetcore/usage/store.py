"""The meter's writes and reads: deltas added by one UPSERT, levels replaced, device days,
flush ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.models import UsageDaily, UsageDeviceDay, UsageFlush

EPOCH = date(1970, 1, 1)

ROWS_PER_STATEMENT = 1000
FLUSH_IDS_KEPT_DAYS = 7  # a flush retried later than this would be lost anyway (meter.py)
CountKey = tuple[uuid.UUID, int, str, str]  # organization, epoch day, kind, transport


def day_of(epoch_day: int) -> date:
    """The date of a day number (days since 1970-01-01, UTC)."""
    return EPOCH + timedelta(days=epoch_day)


def _chunks(rows: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    # Both databases cap a statement's parameters (32,766 / 32,767): 5 a row, 1,000 rows.
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[start : start + ROWS_PER_STATEMENT]


def _insert(dialect: str) -> Any:
    return (postgresql if dialect == "postgresql" else sqlite).insert


async def claim_flush(session: AsyncSession, flush_id: uuid.UUID, at: datetime) -> bool:
    """Record a flush's id in its transaction; False when it is there already (that flush
    committed before). On PostgreSQL an insert of the same id still in flight elsewhere makes
    this wait for its outcome (the unique index), so the answer is never a guess."""
    statement = (
        _insert(session.get_bind().dialect.name)(UsageFlush)
        .values(id=flush_id, at=at)
        .on_conflict_do_nothing()
        .returning(UsageFlush.id)
    )
    return (await session.execute(statement)).first() is not None


async def prune_flushes(session: AsyncSession, before: datetime) -> int:
    """Forget flush ids older than `before`: a retry never comes that late."""
    result = await session.execute(delete(UsageFlush).where(UsageFlush.at < before))
    return int(getattr(result, "rowcount", 0) or 0)


async def add_counts(session: AsyncSession, counts: Mapping[CountKey, int]) -> None:
    """Add each delta to its row (created at 0): n = n + excluded.n, one statement."""
    if not counts:
        return
    dialect = session.get_bind().dialect.name
    rows = [
        {"organization_id": org, "day": day_of(day), "kind": kind, "transport": transport, "n": n}
        for (org, day, kind, transport), n in counts.items()
        if n
    ]
    if not rows:
        return
    for chunk in _chunks(rows):
        statement = _insert(dialect)(UsageDaily).values(chunk)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["organization_id", "day", "kind", "transport"],
                set_={"n": UsageDaily.n + statement.excluded.n},
            )
        )


async def set_levels(
    session: AsyncSession, day: date, kind: UsageKind, levels: Mapping[uuid.UUID, int]
) -> None:
    """Replace a day's levels (storage snapshots): the latest snapshot of the day wins, and an
    organization it no longer names (nothing stored now) has no level that day."""
    await session.execute(
        delete(UsageDaily).where(UsageDaily.day == day, UsageDaily.kind == str(kind))
    )
    rows = [
        {"organization_id": org, "day": day, "kind": str(kind), "transport": "", "n": n}
        for org, n in levels.items()
    ]
    for chunk in _chunks(rows):
        statement = _insert(session.get_bind().dialect.name)(UsageDaily).values(chunk)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=["organization_id", "day", "kind", "transport"],
                set_={"n": statement.excluded.n},
            )
        )


async def add_device_days(
    session: AsyncSession, devices: Iterable[tuple[uuid.UUID, int, uuid.UUID]]
) -> None:
    """Note (organization, day, device) rows; one already there stays as it is."""
    rows = [
        {"organization_id": org, "day": day_of(day), "device_id": device}
        for org, day, device in devices
    ]
    if not rows:
        return
    for chunk in _chunks(rows):
        statement = _insert(session.get_bind().dialect.name)(UsageDeviceDay).values(chunk)
        await session.execute(statement.on_conflict_do_nothing())


async def day_totals(session: AsyncSession, day: date) -> dict[tuple[uuid.UUID, str], int]:
    """Every organization's totals of one day by kind (all transports), active devices too."""
    counters = await session.execute(
        select(UsageDaily.organization_id, UsageDaily.kind, func.sum(UsageDaily.n))
        .where(UsageDaily.day == day)
        .group_by(UsageDaily.organization_id, UsageDaily.kind)
    )
    totals = {(org, kind): int(n or 0) for org, kind, n in counters.all()}
    devices = await session.execute(
        select(UsageDeviceDay.organization_id, func.count())
        .where(UsageDeviceDay.day == day)
        .group_by(UsageDeviceDay.organization_id)
    )
    for org, n in devices.all():
        totals[(org, str(UsageKind.DEVICES_ACTIVE))] = int(n)
    return totals
