"""Planogram suggestions as a service: a cabinet's numbers loaded, the advice of
vending.suggestions answered, and applied as a new planogram version."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.errors import Conflict
from fleetcore.vending.catalog_schemas import SlotIn, SlotOut, SuggestedChangeOut, SuggestionOut
from fleetcore.vending.machines import current_planograms, get_cabinet, slots_with_products
from fleetcore.vending.models import PickLine, Planogram, Product, Sale, ServiceVisit, SlotStock
from fleetcore.vending.planograms import NewVersion, create_version, version_conflict
from fleetcore.vending.suggestions import (
    CabinetData,
    ProductInfo,
    Rules,
    SlotPlan,
    SlotStats,
    Suggestion,
    apply_changes,
    suggest,
)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A cabinet's data, and the version it was computed from."""

    data: CabinetData
    version: int | None


async def load(
    session: AsyncSession,
    principal: Principal,
    cabinet_id: uuid.UUID,
    *,
    now: datetime,
    rules: Rules,
) -> Loaded:
    """The numbers `suggest` needs for a cabinet the caller may see."""
    cabinet = await get_cabinet(session, principal, cabinet_id)
    planogram: Planogram | None = (await current_planograms(session, [cabinet.id])).get(cabinet.id)
    rows = await slots_with_products(session, planogram.id) if planogram else []
    slots = [SlotPlan(s.slot, s.product_id, s.capacity, s.par_level, s.price) for s, _ in rows]
    start = now - timedelta(days=rules.window_days)
    sales = (
        await session.execute(
            select(
                Sale.slot,
                Sale.product_id,
                func.sum(Sale.units),
                func.min(func.coalesce(Sale.period_start, Sale.period_end)),
            )
            .where(Sale.cabinet_id == cabinet.id, Sale.period_end > start, Sale.period_end <= now)
            .group_by(Sale.slot, Sale.product_id)
        )
    ).all()
    products_in = {s.slot: s.product_id for s in slots}
    # Units of the product in the slot now: a product it held before sold differently.
    units = {slot: int(n or 0) for slot, pid, n, _ in sales if pid and products_in.get(slot) == pid}
    firsts = [first for *_, first in sales if first is not None]
    earliest = max(min(firsts), start) if firsts else now
    sales_days = max((now - earliest).total_seconds() / 86400, 0.0)
    visits = (
        await session.execute(
            select(ServiceVisit.order_id, ServiceVisit.serviced_at)
            .where(
                ServiceVisit.device_id == cabinet.device_id,
                ServiceVisit.serviced_at.is_not(None),
            )
            .order_by(ServiceVisit.serviced_at.desc())
            .limit(rules.last_visits)
        )
    ).all()
    times = [t for _, t in visits if t is not None]
    interval = (
        (times[0] - times[-1]).total_seconds() / 86400 / (len(times) - 1)
        if len(times) >= 2 and times[0] > times[-1]
        else None
    )
    sold_out = dict(
        (
            await session.execute(
                select(PickLine.slot, func.count())
                .where(
                    PickLine.order_id.in_([order_id for order_id, _ in visits]),
                    PickLine.cabinet_id == cabinet.id,
                    PickLine.sold_out.is_(True),
                )
                .group_by(PickLine.slot)
            )
        ).all()
    )
    now_out = {
        row.slot
        for row in await session.scalars(
            select(SlotStock).where(
                SlotStock.cabinet_id == cabinet.id, SlotStock.sold_out_at.is_not(None)
            )
        )
        if row.sold_out_at is not None
        and (row.filled_at is None or row.sold_out_at > row.filled_at)
    }
    catalogue = await session.scalars(
        select(Product).where(
            Product.organization_id == cabinet.organization_id,
            Product.archived_at.is_(None) | Product.id.in_([p for p in products_in.values() if p]),
        )
    )
    products = {
        p.id: ProductInfo(
            p.id, p.name, p.category, p.unit_cost, p.default_price, p.archived_at is not None
        )
        for p in catalogue
    }
    stats = {
        s.slot: SlotStats(units.get(s.slot, 0), int(sold_out.get(s.slot, 0)), s.slot in now_out)
        for s in slots
    }
    data = CabinetData(slots, stats, products, sales_days, len(visits), interval)
    return Loaded(data, planogram.version if planogram else None)


def _out(
    cabinet_id: uuid.UUID, loaded: Loaded, suggestion: Suggestion, rules: Rules
) -> SuggestionOut:
    names = {p.id: p.name for p in loaded.data.products.values()}
    return SuggestionOut(
        cabinet_id=cabinet_id,
        status=suggestion.status,
        missing=suggestion.missing,
        based_on_version=loaded.version,
        window_days=rules.window_days,
        sales_days=round(loaded.data.sales_days, 2),
        visits=loaded.data.visits,
        days_between_visits=(
            round(loaded.data.days_between_visits, 2)
            if loaded.data.days_between_visits is not None
            else None
        ),
        changes=[
            SuggestedChangeOut(
                id=c.id,
                kind=c.kind,
                slot=c.slot,
                from_slot=c.from_slot,
                amount=c.amount,
                par_level=c.par_level,
                product_id=c.product_id,
                price=c.price,
                reason=c.reason,
            )
            for c in suggestion.changes
        ],
        slots=[
            SlotOut(
                slot=s.slot,
                product_id=s.product_id,
                product_name=names.get(s.product_id) if s.product_id else None,
                capacity=s.capacity,
                par_level=s.par_level,
                price=s.price,
            )
            for s in suggestion.slots
        ],
    )


async def cabinet_suggestion(
    session: AsyncSession,
    principal: Principal,
    cabinet_id: uuid.UUID,
    *,
    now: datetime | None = None,
    rules: Rules = Rules(),
) -> SuggestionOut:
    """The suggested planogram of a cabinet with every change explained."""
    loaded = await load(session, principal, cabinet_id, now=now or utcnow(), rules=rules)
    return _out(cabinet_id, loaded, suggest(loaded.data, rules), rules)


async def apply_suggestion(
    session: AsyncSession,
    principal: Principal,
    cabinet_id: uuid.UUID,
    *,
    based_on_version: int,
    change_ids: list[str] | None,
    now: datetime | None = None,
    rules: Rules = Rules(),
) -> Planogram:
    """A new version from the suggestion's changes (all, or those named); managers.

    409 when the current version is no longer `based_on_version`, or when the advice
    recomputed now no longer has a change asked for (new sales arrived meanwhile)."""
    principal.require(Role.MANAGER)
    loaded = await load(session, principal, cabinet_id, now=now or utcnow(), rules=rules)
    if loaded.version != based_on_version:
        raise version_conflict()
    suggestion = suggest(loaded.data, rules)
    if suggestion.status != "ok":
        raise Conflict(
            "there is no suggestion to apply: " + "; ".join(suggestion.missing),
            code="SUGGESTION_UNAVAILABLE",
        )
    known = {c.id for c in suggestion.changes}
    unknown = sorted(set(change_ids or ()) - known)
    if unknown:
        raise Conflict(
            "the suggestion changed since it was read; read it again",
            code="SUGGESTION_CHANGED",
            details={"unknown_changes": unknown},
        )
    chosen = [c for c in suggestion.changes if change_ids is None or c.id in change_ids]
    if not chosen:
        raise Conflict("the suggestion has no change to apply", code="NOTHING_TO_APPLY")
    slots = apply_changes(loaded.data.slots, chosen)
    note = "\n".join(c.reason for c in chosen)[:2000]
    return await create_version(
        session,
        principal,
        cabinet_id,
        data=NewVersion(
            slots=[
                SlotIn(
                    slot=s.slot,
                    product_id=s.product_id,
                    capacity=s.capacity,
                    par_level=s.par_level,
                    price=s.price,
                )
                for s in slots
            ],
            note=note,
            source="suggestion",
        ),
        expected_version=based_on_version + 1,
    )
