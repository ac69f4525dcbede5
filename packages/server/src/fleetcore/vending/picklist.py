"""What a slot needs at the next visit, and the pick list's totals: pure, no database.

The need of a slot is par level minus estimated stock, never negative and never more than
fits (capacity minus stock). Where the product comes in cases it is rounded UP to whole
cases, unless a whole case would not fit: then it is what fits (capacity minus stock), and
the rest of the opened case goes back to the van. A slot whose stock is unknown (never
filled through us, no level from an audit) is planned to par (never above capacity) and
marked so: the driver counts it on site. The estimate itself is
vending.machines.estimated_stock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Need:
    """What to bring to one slot."""

    planned: int
    stock_known: bool


def need(*, capacity: int, par_level: int, stock: int | None, case_size: int | None) -> Need:
    """Units to plan for a slot (see the module docstring for the rules)."""
    capacity = max(0, capacity)
    if stock is None:
        return Need(planned=max(0, min(par_level, capacity)), stock_known=False)
    room = max(0, capacity - max(0, stock))
    wanted = min(max(0, par_level - stock), room)
    if wanted and case_size and case_size > 1:
        wanted = min(-(-wanted // case_size) * case_size, room)
    return Need(planned=wanted, stock_known=True)


def cases(units: int, case_size: int | None) -> int | None:
    """Whole cases to take from the warehouse for `units`; None when not sold in cases."""
    if not case_size or case_size < 1:
        return None
    return -(-units // case_size)


@dataclass(frozen=True, slots=True)
class LineUnits:
    """The part of a pick line the warehouse totals need."""

    product_id: uuid.UUID | None
    planned: int


def product_totals(lines: Iterable[LineUnits]) -> dict[uuid.UUID | None, int]:
    """Planned units per product (None: a slot without a product), in first-seen order."""
    totals: dict[uuid.UUID | None, int] = {}
    for line in lines:
        totals[line.product_id] = totals.get(line.product_id, 0) + line.planned
    return totals


def level_after_fill(
    *, stock_before: int | None, filled: int, sold_out: bool, capacity: int
) -> int:
    """The slot's level after a fill: the stock before (0 if found sold out or unknown) plus
    what was filled, never above capacity."""
    before = 0 if sold_out or stock_before is None else max(0, stock_before)
    return min(max(0, capacity), before + filled)
