"""A machine's sales over a time range, per slot, product or day (UTC), from Sale rows.

A Sale belongs to the range its period END (the audit's read time) falls in: an
interval's sales are known only at the read that closes it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.db import as_utc
from fleetcore.errors import Invalid
from fleetcore.vending.models import Sale
from fleetcore.vending.scope import get_machine


class SalesGroup(StrEnum):
    """How GET .../sales groups its rows."""

    SLOT = "slot"
    PRODUCT = "product"
    DAY = "day"


@dataclass(slots=True)
class SalesRow:
    """Sums of one group."""

    key: str | None
    units: int = 0
    revenue: Decimal = Decimal(0)
    cash_units: int = 0
    cash_revenue: Decimal = Decimal(0)
    cashless_units: int = 0
    cashless_revenue: Decimal = Decimal(0)
    test_vends: int = 0
    free_vends: int = 0

    def add(self, other: Sequence[Any]) -> None:
        """Add a row of sums in the order of _SUMS."""
        self.units += int(other[0] or 0)
        self.revenue += other[1] or Decimal(0)
        self.cash_units += int(other[2] or 0)
        self.cash_revenue += other[3] or Decimal(0)
        self.cashless_units += int(other[4] or 0)
        self.cashless_revenue += other[5] or Decimal(0)
        self.test_vends += int(other[6] or 0)
        self.free_vends += int(other[7] or 0)


_SUMS: tuple[ColumnElement[Any], ...] = (
    func.sum(Sale.units),
    func.sum(Sale.revenue),
    func.sum(Sale.cash_units),
    func.sum(Sale.cash_revenue),
    func.sum(Sale.cashless_units),
    func.sum(Sale.cashless_revenue),
    func.sum(Sale.test_vends),
    func.sum(Sale.free_vends),
)


async def machine_sales(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    since: datetime | None,
    until: datetime | None,
    group: SalesGroup,
) -> list[SalesRow]:
    """Sales of a machine the caller may see, in [since, until), grouped."""
    await get_machine(session, principal, device_id)
    conditions = [Sale.device_id == device_id]
    if since is not None:
        conditions.append(Sale.period_end >= as_utc(since))
    if until is not None:
        conditions.append(Sale.period_end < as_utc(until))
    if since is not None and until is not None and as_utc(until) <= as_utc(since):
        raise Invalid("until must be after since", code="INVALID_RANGE")
    column: Any = {
        SalesGroup.SLOT: Sale.slot,
        SalesGroup.PRODUCT: Sale.product_id,
        SalesGroup.DAY: Sale.period_end,  # one row per audit, bucketed by day below
    }[group]
    rows = await session.execute(
        select(column, *_SUMS).where(*conditions).group_by(column).order_by(column)
    )
    out: dict[str | None, SalesRow] = {}
    for key, *sums in rows:
        if group is SalesGroup.DAY:
            name: str | None = as_utc(key).date().isoformat()
        else:
            name = None if key is None else str(key)
        out.setdefault(name, SalesRow(name)).add(sums)
    return list(out.values())
