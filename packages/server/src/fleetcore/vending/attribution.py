"""Which cabinet, product and price a slot had at a time, from the planogram versions.

Sales of a period go to what the slot held at the period's START: products change at a
service visit, usually just before a read, so the new planogram (effective from the visit)
must not take the sales of the product it replaced. A slot not in the planograms in effect
then falls back to the current ones (a slot added later); a selection in no planogram
goes to the machine's first cabinet, with no product.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.vending.machines import cabinets_of
from fleetcore.vending.models import Planogram, PlanogramSlot


@dataclass(frozen=True, slots=True)
class Place:
    """Where a slot's sales go."""

    cabinet_id: uuid.UUID | None
    product_id: uuid.UUID | None
    price: Decimal | None = None


class Attribution:
    """Slot -> Place for one machine at one time."""

    def __init__(
        self,
        at_time: dict[str, Place],
        current: dict[str, Place],
        default_cabinet: uuid.UUID | None,
    ) -> None:
        self._at_time = at_time
        self._current = current
        self._default = Place(default_cabinet, None)

    def place(self, slot: str) -> Place:
        """The slot's cabinet and product at the time, else now, else the first cabinet."""
        return self._at_time.get(slot) or self._current.get(slot) or self._default


def _in_effect(versions: Iterable[Planogram], at: datetime | None) -> Planogram | None:
    chosen: Planogram | None = None
    for version in versions:
        if at is not None and version.effective_from > at:
            continue
        if chosen is None or version.version > chosen.version:
            chosen = version
    return chosen


async def attribution_at(
    session: AsyncSession, device_id: uuid.UUID, at: datetime | None
) -> Attribution:
    """The machine's slot places at `at` (None: the first audit, current planograms)."""
    cabinets = await cabinets_of(session, device_id)
    ids = [c.id for c in cabinets]
    versions = list(await session.scalars(select(Planogram).where(Planogram.cabinet_id.in_(ids))))
    at_time: list[Planogram] = []
    current: list[Planogram] = []
    for cabinet in cabinets:  # display order: a slot code in two cabinets goes to the first
        mine = [v for v in versions if v.cabinet_id == cabinet.id]
        if (then := _in_effect(mine, at)) is not None:
            at_time.append(then)
        if (now := _in_effect(mine, None)) is not None:
            current.append(now)
    wanted = {p.id for p in at_time + current}
    slots = list(
        await session.scalars(select(PlanogramSlot).where(PlanogramSlot.planogram_id.in_(wanted)))
    )

    def places(planograms: list[Planogram]) -> dict[str, Place]:
        out: dict[str, Place] = {}
        for planogram in planograms:
            for row in slots:
                if row.planogram_id == planogram.id:
                    out.setdefault(row.slot, Place(planogram.cabinet_id, row.product_id, row.price))
        return out

    return Attribution(places(at_time), places(current), ids[0] if ids else None)
