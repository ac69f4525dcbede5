"""Reading usage: an organization's days or months, from daily rows and monthly roll-ups alike.

A month is answered the same way whether its days are still kept daily or were rolled up
(rollup.py): counters are the sum of the month's days, levels (storage) the largest day, and
active devices the distinct devices of the month. Days are UTC. Day granularity answers only
days still kept daily (older ones exist as months only).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal, Role
from fleetcore.errors import Forbidden, Invalid
from fleetcore.usage.kinds import LEVELS, UsageKind
from fleetcore.usage.models import UsageDaily, UsageDeviceDay, UsageMonthly

MAX_DAYS = 3 * 366  # one answer's reach at day granularity
MAX_MONTHS = 10 * 12


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One kind's total over one period (a day, or a month's first day)."""

    period: date
    kind: str
    transport: str
    n: int


@dataclass(frozen=True, slots=True)
class Usage:
    """An organization's usage between two days, by day or month."""

    organization_id: uuid.UUID
    granularity: str
    start: date
    end: date
    rows: list[UsageRow]


def month_of(day: date) -> date:
    """The first day of `day`'s month."""
    return day.replace(day=1)


def next_month(month: date) -> date:
    """The first day of the month after `month`."""
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _organization(principal: Principal, organization_id: uuid.UUID | None) -> uuid.UUID:
    """Admins read their own organization; a superuser may name another."""
    principal.require(Role.ADMIN)
    if organization_id is not None and organization_id != principal.organization_id:
        if not principal.is_superuser:
            raise Forbidden(
                "only a superuser reads another organization's usage", code="NOT_SUPERUSER"
            )
        return organization_id
    if principal.organization_id is None:
        raise Invalid("name the organization_id", code="ORGANIZATION_REQUIRED")
    return principal.organization_id


def _period(
    start: date | None, end: date | None, granularity: str, today: date
) -> tuple[date, date]:
    end = end or today
    if start is None and granularity == "day":
        start = end - timedelta(days=29)
    elif start is None:  # the last twelve months
        year, month = (
            (end.year, end.month - 11) if end.month == 12 else (end.year - 1, end.month + 1)
        )
        start = date(year, month, 1)
    if start > end:
        raise Invalid(
            "from must not be after to",
            code="INVALID_PERIOD",
            details={"from": start.isoformat(), "to": end.isoformat()},
        )
    if granularity == "day" and (end - start).days >= MAX_DAYS:
        raise Invalid(f"at most {MAX_DAYS} days by day; ask by month", code="PERIOD_TOO_LONG")
    months = (end.year - start.year) * 12 + end.month - start.month
    if months >= MAX_MONTHS:
        raise Invalid(f"at most {MAX_MONTHS} months at once", code="PERIOD_TOO_LONG")
    return start, end


async def usage(
    session: AsyncSession,
    principal: Principal,
    *,
    start: date | None,
    end: date | None,
    granularity: str = "day",
    organization_id: uuid.UUID | None = None,
    today: date,
) -> Usage:
    """An organization's usage from `start` to `end` (inclusive, UTC days), by day or month."""
    org = _organization(principal, organization_id)
    start, end = _period(start, end, granularity, today)
    if granularity == "month":
        start, end = month_of(start), next_month(month_of(end)) - timedelta(days=1)
        rows = await _months(session, org, start, end)
    else:
        rows = await _days(session, org, start, end)
    rows.sort(key=lambda r: (r.period, r.kind, r.transport))
    return Usage(org, granularity, start, end, rows)


async def _days(session: AsyncSession, org: uuid.UUID, start: date, end: date) -> list[UsageRow]:
    daily = await session.execute(
        select(UsageDaily.day, UsageDaily.kind, UsageDaily.transport, UsageDaily.n).where(
            UsageDaily.organization_id == org, UsageDaily.day.between(start, end)
        )
    )
    rows = [UsageRow(day, kind, transport, int(n)) for day, kind, transport, n in daily.all()]
    devices = await session.execute(
        select(UsageDeviceDay.day, func.count())
        .where(UsageDeviceDay.organization_id == org, UsageDeviceDay.day.between(start, end))
        .group_by(UsageDeviceDay.day)
    )
    rows += [UsageRow(day, UsageKind.DEVICES_ACTIVE, "", int(n)) for day, n in devices.all()]
    return rows


async def _months(session: AsyncSession, org: uuid.UUID, start: date, end: date) -> list[UsageRow]:
    totals: dict[tuple[date, str, str], int] = defaultdict(int)
    daily = await session.execute(
        select(UsageDaily.day, UsageDaily.kind, UsageDaily.transport, UsageDaily.n).where(
            UsageDaily.organization_id == org, UsageDaily.day.between(start, end)
        )
    )
    monthly = await session.execute(
        select(UsageMonthly.month, UsageMonthly.kind, UsageMonthly.transport, UsageMonthly.n).where(
            UsageMonthly.organization_id == org, UsageMonthly.month.between(start, end)
        )
    )
    for period, kind, transport, n in [*daily.all(), *monthly.all()]:
        key = (month_of(period), kind, transport)
        totals[key] = max(totals[key], int(n)) if kind in LEVELS else totals[key] + int(n)
    # Distinct devices of each month still kept daily (one query per month: a handful).
    month = start
    while month <= end:
        following = next_month(month)
        distinct = await session.scalar(
            select(func.count(func.distinct(UsageDeviceDay.device_id))).where(
                UsageDeviceDay.organization_id == org,
                UsageDeviceDay.day >= month,
                UsageDeviceDay.day < following,
            )
        )
        if distinct:
            key = (month, str(UsageKind.DEVICES_ACTIVE), "")
            totals[key] = max(totals[key], int(distinct))
        month = following
    return [UsageRow(period, kind, transport, n) for (period, kind, transport), n in totals.items()]
