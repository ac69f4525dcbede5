"""Vending machines: the vending side of a device, its cabinets, and what is in their slots."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict, new_id, utcnow
from fleetcore.devices.models import Device
from fleetcore.devices.service import get_device
from fleetcore.errors import Conflict, NotFound
from fleetcore.pagination import encode_cursor, paginate
from fleetcore.vending import scope
from fleetcore.vending.catalog_schemas import (
    CabinetDetail,
    CabinetIn,
    CabinetOut,
    CabinetPatch,
    MachineDetail,
    MachineIn,
    MachineOut,
    MachinePatch,
    StockedSlotOut,
)
from fleetcore.vending.models import (
    Audit,
    Cabinet,
    Machine,
    PickLine,
    Planogram,
    PlanogramSlot,
    Product,
    Sale,
    SlotStock,
)
from fleetcore.vending.upsert import insert_or_ignore

DEFAULT_CABINET = "main"


async def ensure_machine(
    session: AsyncSession, *, organization_id: uuid.UUID, device_id: uuid.UUID
) -> Machine:
    """The device's vending machine, created with one cabinet ("main") if it has none.

    The caller has already checked the device belongs to `organization_id`; does not
    commit. Two first uploads of one device at once both succeed (see insert_machine).
    """
    machine = await session.get(Machine, device_id)
    if machine is None:
        await insert_machine(session, organization_id=organization_id, device_id=device_id)
        machine = await session.get(Machine, device_id)
    assert machine is not None
    return machine


async def insert_machine(
    session: AsyncSession, *, organization_id: uuid.UUID, device_id: uuid.UUID
) -> bool:
    """Insert the machine and its "main" cabinet; False when the machine exists already.

    INSERT ... ON CONFLICT DO NOTHING: of two concurrent inserts the database lets one in
    and the other (waiting for it, on PostgreSQL) inserts nothing, without an error.
    """
    created = await insert_or_ignore(
        session,
        Machine,
        {"device_id": device_id, "organization_id": organization_id, "created_at": utcnow()},
    )
    if created:
        await insert_or_ignore(
            session,
            Cabinet,
            {
                "id": new_id(),
                "organization_id": organization_id,
                "device_id": device_id,
                "name": DEFAULT_CABINET,
                "position": 0,
                "created_at": utcnow(),
            },
        )
    return created


async def cabinets_of(session: AsyncSession, device_id: uuid.UUID) -> list[Cabinet]:
    """A machine's cabinets in display order."""
    rows = await session.scalars(
        select(Cabinet)
        .where(Cabinet.device_id == device_id)
        .order_by(Cabinet.position, Cabinet.name)
    )
    return list(rows)


def estimated_stock(stock_row: SlotStock | None) -> int | None:
    """Units left in a slot: the level at the last fill minus what sold since, floored at 0;
    None when no fill is known."""
    if stock_row is None or stock_row.fill_level is None:
        return None
    return max(stock_row.fill_level - stock_row.sold_since_fill, 0)


async def get_cabinet(
    session: AsyncSession, principal: Principal, cabinet_id: uuid.UUID
) -> Cabinet:
    """A cabinet of a machine the caller may see (drivers: their routes'), or 404."""
    cabinet = await session.scalar(
        select(Cabinet)
        .join(Machine, Machine.device_id == Cabinet.device_id)
        .where(Cabinet.id == cabinet_id, scope.machine_visible(principal))
    )
    if cabinet is None:
        raise NotFound("cabinet not found", code="CABINET_NOT_FOUND")
    return cabinet


async def current_planograms(
    session: AsyncSession, cabinet_ids: list[uuid.UUID]
) -> dict[uuid.UUID, Planogram]:
    """The current (highest) version of each cabinet that has one."""
    if not cabinet_ids:
        return {}
    latest = (
        select(Planogram.cabinet_id, func.max(Planogram.version).label("version"))
        .where(Planogram.cabinet_id.in_(cabinet_ids))
        .group_by(Planogram.cabinet_id)
        .subquery()
    )
    rows = await session.scalars(
        select(Planogram).join(
            latest,
            (Planogram.cabinet_id == latest.c.cabinet_id) & (Planogram.version == latest.c.version),
        )
    )
    return {p.cabinet_id: p for p in rows}


async def slots_with_products(
    session: AsyncSession, planogram_id: uuid.UUID
) -> list[tuple[PlanogramSlot, Product | None]]:
    """A version's slots by code, each with its product."""
    rows = await session.execute(
        select(PlanogramSlot, Product)
        .outerjoin(Product, Product.id == PlanogramSlot.product_id)
        .where(PlanogramSlot.planogram_id == planogram_id)
        .order_by(PlanogramSlot.slot)
    )
    return [(slot, product) for slot, product in rows]


def _record(
    session: AsyncSession, principal: Principal, action: str, target: Any, **details: Any
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=principal.org_id,
        target_type="vending_cabinet" if ".cabinet." in action else "vending_machine",
        target_id=target,
        details=details,
    )


def machine_out(machine: Machine, device: Device) -> MachineOut:
    """The answer for a machine and its device."""
    return MachineOut(
        device_id=machine.device_id,
        name=device.name,
        serial_number=device.serial_number,
        location=machine.location,
        route_id=machine.route_id,
        dex_serial=machine.dex_serial,
        currency=machine.currency,
        last_audit_at=machine.last_audit_at,
        created_at=machine.created_at,
    )


def machine_exists() -> Conflict:
    """The error for a device that is already a vending machine."""
    return Conflict("this device is already a vending machine", code="MACHINE_EXISTS")


async def create_machine(
    session: AsyncSession, principal: Principal, *, data: MachineIn
) -> Machine:
    """Make a live device of the organization a vending machine (managers)."""
    principal.require(Role.MANAGER)
    await get_device(session, principal, data.device_id)
    if data.route_id is not None:
        await scope.get_route(session, principal, data.route_id)
    if await session.get(Machine, data.device_id) is not None:
        raise machine_exists()
    # Another request made it a machine since the check: the primary key decided.
    if not await insert_machine(
        session, organization_id=principal.org_id, device_id=data.device_id
    ):
        raise machine_exists()
    machine = await ensure_machine(
        session, organization_id=principal.org_id, device_id=data.device_id
    )
    machine.location = data.location
    machine.route_id = data.route_id
    machine.dex_serial = data.dex_serial
    if data.cabinets:
        main = (await cabinets_of(session, machine.device_id))[0]
        main.name, main.position = data.cabinets[0].name, data.cabinets[0].position
        for extra in data.cabinets[1:]:
            session.add(
                Cabinet(
                    organization_id=principal.org_id,
                    device_id=machine.device_id,
                    name=extra.name,
                    position=extra.position,
                )
            )
    await session.flush()
    _record(session, principal, "vending.machine.create", machine.device_id)
    await session.commit()
    return machine


async def list_machines(
    session: AsyncSession,
    principal: Principal,
    *,
    route_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[MachineOut], str | None]:
    """One page of the machines the caller may see, oldest first; filter by route."""
    query = (
        select(Machine, Device)
        .join(Device, Device.id == Machine.device_id)
        .where(scope.machine_visible(principal), Device.deleted_at.is_(None))
    )
    if route_id is not None:
        query = query.where(Machine.route_id == route_id)
    query = paginate(
        query, sort=Machine.created_at, id_column=Machine.device_id, cursor=cursor, limit=limit
    )
    rows = (await session.execute(query)).all()
    items = [machine_out(m, d) for m, d in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = encode_cursor(last.created_at, last.device_id)
    return items, next_cursor


async def machine_detail(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID
) -> MachineDetail:
    """A machine with its cabinets, their current slots and the estimated stock of each."""
    machine = await scope.get_machine(session, principal, device_id)
    device = await session.get_one(Device, device_id)
    cabinets = await cabinets_of(session, device_id)
    current = await current_planograms(session, [c.id for c in cabinets])
    stock_rows = await session.scalars(
        select(SlotStock).where(SlotStock.cabinet_id.in_([c.id for c in cabinets]))
    )
    stock = {(s.cabinet_id, s.slot): s for s in stock_rows}
    details: list[CabinetDetail] = []
    for cabinet in cabinets:
        planogram = current.get(cabinet.id)
        slots: list[StockedSlotOut] = []
        if planogram is not None:
            for slot, product in await slots_with_products(session, planogram.id):
                row = stock.get((cabinet.id, slot.slot))
                slots.append(
                    StockedSlotOut(
                        slot=slot.slot,
                        product_id=slot.product_id,
                        product_name=product.name if product else None,
                        capacity=slot.capacity,
                        par_level=slot.par_level,
                        price=slot.price,
                        estimated_stock=estimated_stock(row),
                        sold_out_at=row.sold_out_at if row else None,
                    )
                )
        details.append(
            CabinetDetail(
                **CabinetOut.model_validate(cabinet).model_dump(),
                planogram_id=planogram.id if planogram else None,
                planogram_version=planogram.version if planogram else None,
                slots=slots,
            )
        )
    return MachineDetail(**machine_out(machine, device).model_dump(), cabinets=details)


async def update_machine(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, data: MachinePatch
) -> Machine:
    """Change location, route or expected DEX serial (managers)."""
    principal.require(Role.MANAGER)
    machine = await scope.get_machine(session, principal, device_id)
    sent = data.model_fields_set
    if "route_id" in sent and data.route_id is not None:
        await scope.get_route(session, principal, data.route_id)
    changed = [
        name
        for name in ("location", "route_id", "dex_serial")
        if name in sent and getattr(data, name) != getattr(machine, name)
    ]
    for name in changed:
        setattr(machine, name, getattr(data, name))
    if changed:
        _record(session, principal, "vending.machine.update", device_id, fields=changed)
        await session.commit()
    return machine


async def delete_machine(session: AsyncSession, principal: Principal, device_id: uuid.UUID) -> None:
    """Remove the vending side of a device (managers); the device stays. 409 once it has
    audits: they and their sales are the machine's accounting history."""
    principal.require(Role.MANAGER)
    machine = await scope.get_machine(session, principal, device_id)
    if await session.scalar(select(exists().where(Audit.device_id == device_id))):
        raise Conflict(
            "the machine has DEX audits (its sales history); it cannot be removed",
            code="MACHINE_HAS_HISTORY",
        )
    await session.delete(machine)
    _record(session, principal, "vending.machine.delete", device_id)
    await session.commit()


def cabinet_name_taken(name: str) -> Conflict:
    """The error for a cabinet name the machine already has."""
    return Conflict(
        f"the machine already has a cabinet named {name!r}",
        code="CABINET_NAME_TAKEN",
        details={"field": "name"},
    )


async def _check_cabinet_name(
    session: AsyncSession, device_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Cabinet.id).where(Cabinet.device_id == device_id, Cabinet.name == name)
    if exclude is not None:
        query = query.where(Cabinet.id != exclude)
    if await session.scalar(query.limit(1)):
        raise cabinet_name_taken(name)


async def add_cabinet(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, data: CabinetIn
) -> Cabinet:
    """Add a cabinet to a machine (managers); names are unique per machine."""
    principal.require(Role.MANAGER)
    machine = await scope.get_machine(session, principal, device_id)
    await _check_cabinet_name(session, device_id, data.name)
    cabinet = Cabinet(
        organization_id=machine.organization_id,
        device_id=device_id,
        name=data.name,
        position=data.position,
    )
    session.add(cabinet)
    # The (device_id, name) unique constraint decides between concurrent adds.
    await flush_or_conflict(session, cabinet_name_taken(data.name))
    _record(session, principal, "vending.cabinet.create", cabinet.id, name=cabinet.name)
    await session.commit()
    return cabinet


async def update_cabinet(
    session: AsyncSession, principal: Principal, cabinet_id: uuid.UUID, *, data: CabinetPatch
) -> Cabinet:
    """Rename or reorder a cabinet (managers)."""
    principal.require(Role.MANAGER)
    cabinet = await get_cabinet(session, principal, cabinet_id)
    sent = data.model_fields_set
    changed = [
        n for n in ("name", "position") if n in sent and getattr(data, n) != getattr(cabinet, n)
    ]
    if not changed:
        return cabinet
    if "name" in changed and data.name is not None:
        await _check_cabinet_name(session, cabinet.device_id, data.name, exclude=cabinet.id)
    for name in changed:
        setattr(cabinet, name, getattr(data, name))
    await flush_or_conflict(session, cabinet_name_taken(cabinet.name))
    _record(session, principal, "vending.cabinet.update", cabinet.id, fields=changed)
    await session.commit()
    return cabinet


@dataclass(frozen=True, slots=True)
class _History:
    sales: bool
    pick_lines: bool


async def delete_cabinet(
    session: AsyncSession, principal: Principal, cabinet_id: uuid.UUID
) -> None:
    """Delete a cabinet and its planograms (managers); 409 once it has sales or service
    history, which would lose the cabinet they are attributed to."""
    principal.require(Role.MANAGER)
    cabinet = await get_cabinet(session, principal, cabinet_id)
    history = _History(
        sales=bool(await session.scalar(select(exists().where(Sale.cabinet_id == cabinet.id)))),
        pick_lines=bool(
            await session.scalar(select(exists().where(PickLine.cabinet_id == cabinet.id)))
        ),
    )
    if history.sales or history.pick_lines:
        what = "sales" if history.sales else "service orders"
        raise Conflict(
            f"the cabinet has {what} recorded against it; deleting it would lose where they"
            " happened",
            code="CABINET_HAS_HISTORY",
            details={"sales": history.sales, "service_orders": history.pick_lines},
        )
    await session.delete(cabinet)
    _record(session, principal, "vending.cabinet.delete", cabinet.id, name=cabinet.name)
    await session.commit()
