"""Planograms: versioned slot assignments of a cabinet. A change is a new version; an old
version is never edited, so past sales stay attributed to what was in the slot then."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import new_id, utcnow
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.vending import scope
from fleetcore.vending.catalog_schemas import (
    PlanogramDiff,
    PlanogramOut,
    PlanogramSummary,
    SlotChangeOut,
    SlotIn,
    SlotOut,
)
from fleetcore.vending.machines import (
    cabinets_of,
    current_planograms,
    get_cabinet,
    slots_with_products,
)
from fleetcore.vending.models import Cabinet, Machine, Planogram, PlanogramSlot, Product

# A PUT that loses the race for a version number retries with the next one this many times
# (each retry sees the winners' committed versions); after that it answers 409.
VERSION_ATTEMPTS = 8
_COMPARED = ("product_id", "capacity", "par_level", "price")


def version_conflict() -> Conflict:
    """The error when the cabinet's planogram changed under the request."""
    return Conflict(
        "the cabinet's planogram changed meanwhile; reload it and retry",
        code="PLANOGRAM_CHANGED",
    )


async def get_planogram(
    session: AsyncSession, principal: Principal, planogram_id: uuid.UUID
) -> Planogram:
    """A planogram version of a machine the caller may see, or 404."""
    planogram = await session.scalar(
        select(Planogram)
        .join(Cabinet, Cabinet.id == Planogram.cabinet_id)
        .join(Machine, Machine.device_id == Cabinet.device_id)
        .where(Planogram.id == planogram_id, scope.machine_visible(principal))
    )
    if planogram is None:
        raise NotFound("planogram not found", code="PLANOGRAM_NOT_FOUND")
    return planogram


def summary(planogram: Planogram) -> PlanogramSummary:
    """A version without its slots."""
    return PlanogramSummary(
        id=planogram.id,
        cabinet_id=planogram.cabinet_id,
        version=planogram.version,
        effective_from=planogram.effective_from,
        source=planogram.source,
        note=planogram.note,
        created_by=planogram.created_by,
        created_at=planogram.created_at,
    )


def _slot_out(slot: PlanogramSlot, product: Product | None) -> SlotOut:
    return SlotOut(
        slot=slot.slot,
        product_id=slot.product_id,
        product_name=product.name if product else None,
        capacity=slot.capacity,
        par_level=slot.par_level,
        price=slot.price,
    )


async def planogram_out(session: AsyncSession, planogram: Planogram) -> PlanogramOut:
    """A version with its slots and their products' names."""
    rows = await slots_with_products(session, planogram.id)
    return PlanogramOut(**summary(planogram).model_dump(), slots=[_slot_out(s, p) for s, p in rows])


async def current_of(
    session: AsyncSession, principal: Principal, cabinet_id: uuid.UUID
) -> Planogram | None:
    """The current version of a cabinet the caller may see (None: it has none yet)."""
    cabinet = await get_cabinet(session, principal, cabinet_id)
    return (await current_planograms(session, [cabinet.id])).get(cabinet.id)


async def current_planogram(
    session: AsyncSession, principal: Principal, cabinet_id: uuid.UUID
) -> PlanogramOut:
    """The current version with its slots; 404 PLANOGRAM_NOT_FOUND before the first."""
    planogram = await current_of(session, principal, cabinet_id)
    if planogram is None:
        raise NotFound("the cabinet has no planogram yet", code="PLANOGRAM_NOT_FOUND")
    return await planogram_out(session, planogram)


async def history(
    session: AsyncSession,
    principal: Principal,
    cabinet_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[Planogram], str | None]:
    """A cabinet's versions, newest first."""
    cabinet = await get_cabinet(session, principal, cabinet_id)
    query = paginate(
        select(Planogram).where(Planogram.cabinet_id == cabinet.id),
        sort=Planogram.version,
        id_column=Planogram.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="version")


async def _check_products(
    session: AsyncSession, org_id: uuid.UUID, slots: list[SlotIn]
) -> dict[uuid.UUID, Product]:
    wanted = {s.product_id for s in slots if s.product_id is not None}
    found = {
        p.id: p
        for p in await session.scalars(
            select(Product).where(
                Product.id.in_(wanted),
                Product.organization_id == org_id,
                Product.archived_at.is_(None),
            )
        )
    }
    for item in slots:
        if item.product_id is not None and item.product_id not in found:
            raise Invalid(
                f"slot {item.slot}: no such product in the catalogue (or it is archived)",
                code="PRODUCT_NOT_AVAILABLE",
                details={"slot": item.slot, "product_id": str(item.product_id)},
            )
    return found


async def _check_slots_free(session: AsyncSession, cabinet: Cabinet, slots: list[SlotIn]) -> None:
    # A DEX selection code names one slot of the whole machine, so an audit's selection maps
    # to one cabinet. Checked against the other cabinets' current versions; two PUTs racing
    # on two cabinets of one machine are not serialised by a constraint (rare, and visible).
    others = [c for c in await cabinets_of(session, cabinet.device_id) if c.id != cabinet.id]
    current = await current_planograms(session, [c.id for c in others])
    if not current:
        return
    names = {c.id: c.name for c in others}
    used = await session.execute(
        select(PlanogramSlot.slot, Planogram.cabinet_id)
        .join(Planogram, Planogram.id == PlanogramSlot.planogram_id)
        .where(PlanogramSlot.planogram_id.in_([p.id for p in current.values()]))
    )
    taken = {slot: cabinet_id for slot, cabinet_id in used}
    for item in slots:
        if item.slot in taken:
            other = taken[item.slot]
            raise Conflict(
                f"slot {item.slot} is already in cabinet {names[other]!r} of this machine",
                code="SLOT_IN_OTHER_CABINET",
                details={"slot": item.slot, "cabinet_id": str(other)},
            )


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What a new version is made of (validated slots, a note, where it came from)."""

    slots: list[SlotIn]
    note: str
    source: str = "manual"


async def create_version(
    session: AsyncSession,
    principal: Principal,
    cabinet_id: uuid.UUID,
    *,
    data: NewVersion,
    expected_version: int | None = None,
) -> Planogram:
    """The cabinet's next version (managers). With `expected_version`, exactly that number
    or 409; without, max + 1, retried if a concurrent PUT took the number."""
    principal.require(Role.MANAGER)
    cabinet = await get_cabinet(session, principal, cabinet_id)
    products = await _check_products(session, cabinet.organization_id, data.slots)
    await _check_slots_free(session, cabinet, data.slots)
    for attempt in range(VERSION_ATTEMPTS):
        latest = await session.scalar(
            select(func.max(Planogram.version)).where(Planogram.cabinet_id == cabinet.id)
        )
        version = (latest or 0) + 1
        if expected_version is not None and version != expected_version:
            raise version_conflict()
        planogram = Planogram(
            id=new_id(),
            organization_id=cabinet.organization_id,
            cabinet_id=cabinet.id,
            version=version,
            effective_from=utcnow(),
            source=data.source,
            note=data.note,
            created_by=principal.user_id,
        )
        try:
            # The unique (cabinet_id, version) constraint decides a race: the loser's
            # savepoint rolls back and it retries with the winner's version + 1, so two
            # concurrent PUTs make two versions; an apply (expected_version) answers 409.
            async with session.begin_nested():
                session.add(planogram)
                await session.flush()
                session.add_all(_slot_rows(planogram.id, data.slots, products))
                await session.flush()
        except IntegrityError:
            if expected_version is not None or attempt == VERSION_ATTEMPTS - 1:
                await session.rollback()
                raise version_conflict() from None
            continue
        break
    audit.record(
        session,
        action="vending.planogram.create",
        actor=principal,
        organization_id=cabinet.organization_id,
        target_type="vending_cabinet",
        target_id=cabinet.id,
        details={
            "planogram_id": str(planogram.id),
            "version": planogram.version,
            "source": data.source,
            "slots": len(data.slots),
        },
    )
    await session.commit()
    return planogram


def _slot_rows(
    planogram_id: uuid.UUID, slots: list[SlotIn], products: dict[uuid.UUID, Product]
) -> list[PlanogramSlot]:
    rows = []
    for item in slots:
        price = item.price
        if price is None and item.product_id is not None:
            price = products[item.product_id].default_price
        rows.append(
            PlanogramSlot(
                planogram_id=planogram_id,
                slot=item.slot,
                product_id=item.product_id,
                capacity=item.capacity,
                par_level=item.par_level,
                price=price,
            )
        )
    return rows


async def _previous(session: AsyncSession, planogram: Planogram) -> Planogram | None:
    return await session.scalar(
        select(Planogram)
        .where(Planogram.cabinet_id == planogram.cabinet_id, Planogram.version < planogram.version)
        .order_by(Planogram.version.desc())
        .limit(1)
    )


def _value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


async def diff(
    session: AsyncSession,
    principal: Principal,
    planogram_id: uuid.UUID,
    *,
    against_id: uuid.UUID | None,
) -> PlanogramDiff:
    """What a version changed from `against_id` (default: the cabinet's previous version)."""
    planogram = await get_planogram(session, principal, planogram_id)
    if against_id is not None:
        against: Planogram | None = await get_planogram(session, principal, against_id)
    else:
        against = await _previous(session, planogram)
    new = {s.slot: (s, p) for s, p in await slots_with_products(session, planogram.id)}
    old = (
        {s.slot: (s, p) for s, p in await slots_with_products(session, against.id)}
        if against is not None
        else {}
    )
    changed = []
    for code in sorted(new.keys() & old.keys()):
        before, after = old[code][0], new[code][0]
        fields = {
            name: [_value(getattr(before, name)), _value(getattr(after, name))]
            for name in _COMPARED
            if getattr(before, name) != getattr(after, name)
        }
        if fields:
            changed.append(SlotChangeOut(slot=code, fields=fields))
    return PlanogramDiff(
        planogram_id=planogram.id,
        against_id=against.id if against is not None else None,
        added=[_slot_out(*new[c]) for c in sorted(new.keys() - old.keys())],
        removed=[_slot_out(*old[c]) for c in sorted(old.keys() - new.keys())],
        changed=changed,
    )
