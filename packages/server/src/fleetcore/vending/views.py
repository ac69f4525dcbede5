"""What the vending pages show: read-only queries, every one scoped by vending.scope.

Sums are done by the database (Money is an integer of 1/10,000, so SQL sums stay exact);
days are cut in Python so the same code runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.errors import NotFound
from fleetcore.vending import scope
from fleetcore.vending.machines import cabinets_of, current_planograms, estimated_stock
from fleetcore.vending.models import (
    Audit,
    Cabinet,
    Machine,
    Planogram,
    PlanogramSlot,
    Product,
    Sale,
    SlotStock,
)

STALE_AFTER = timedelta(hours=48)  # a machine without an audit for longer is "not audited"
RANKED = 5  # products shown in the top and bottom lists
CHART_DAYS = 30


@dataclass(frozen=True, slots=True)
class Totals:
    """Units and revenue over a period."""

    units: int
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class ProductSales:
    """One product's sales over a period."""

    product_id: uuid.UUID
    name: str
    units: int
    revenue: Decimal


@dataclass(frozen=True, slots=True)
class MachineRow:
    """A machine in a list: its device name, location, and why it is listed."""

    device_id: uuid.UUID
    name: str
    location: str
    last_audit_at: datetime | None
    sold_out: int = 0


@dataclass(frozen=True, slots=True)
class Overview:
    """The fleet page: sales, products ranked, machines needing attention."""

    sales: dict[str, Totals]
    top: list[ProductSales]
    bottom: list[ProductSales]
    sold_out: list[MachineRow]
    not_audited: list[MachineRow]
    machines: int


@dataclass(frozen=True, slots=True)
class SlotView:
    """A slot of a cabinet's current planogram with what is known of its stock."""

    slot: str
    product: str | None
    price: Decimal | None
    capacity: int
    par_level: int
    stock: int | None  # estimated; None when the machine was never filled through us
    sold_out: bool


@dataclass(frozen=True, slots=True)
class CabinetView:
    """A cabinet, its current planogram (if any) and its slots."""

    cabinet: Cabinet
    planogram: Planogram | None
    slots: list[SlotView]


@dataclass(frozen=True, slots=True)
class MachineView:
    """A machine page: the machine, its device's name, cabinets, sales per day, audits."""

    machine: Machine
    name: str
    cabinets: list[CabinetView]
    days: list[date]
    units: list[int]
    revenue: list[Decimal]
    audits: list[Audit]


def _names() -> Any:
    """Device id and name of live devices (a deleted device's machine is not shown)."""
    return and_(Device.id == Machine.device_id, Device.deleted_at.is_(None))


def _sold_out_condition() -> ColumnElement[bool]:
    return or_(
        SlotStock.sold_out_at.is_not(None),
        and_(
            SlotStock.fill_level.is_not(None),
            SlotStock.fill_level - SlotStock.sold_since_fill <= 0,
        ),
    )


async def overview(session: AsyncSession, principal: Principal, *, now: datetime) -> Overview:
    """The fleet page's figures for the caller's machines."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    sales = {
        "today": await _totals(session, principal, since=today),
        "7d": await _totals(session, principal, since=now - timedelta(days=7)),
        "30d": await _totals(session, principal, since=now - timedelta(days=30)),
    }
    ranked = await _product_sales(session, principal, since=now - timedelta(days=30))
    top = [p for p in ranked if p.units > 0][:RANKED]
    shown = {p.product_id for p in top}
    bottom = [p for p in reversed(ranked) if p.product_id not in shown][:RANKED]
    count = await session.scalar(
        select(func.count())
        .select_from(Machine)
        .join(Device, _names())
        .where(scope.machine_visible(principal))
    )
    return Overview(
        sales=sales,
        top=top,
        bottom=bottom,
        sold_out=await _sold_out_machines(session, principal),
        not_audited=await _not_audited(session, principal, before=now - STALE_AFTER),
        machines=count or 0,
    )


async def _totals(session: AsyncSession, principal: Principal, *, since: datetime) -> Totals:
    row = (
        await session.execute(
            select(func.coalesce(func.sum(Sale.units), 0), func.sum(Sale.revenue))
            .join(Machine, Machine.device_id == Sale.device_id)
            .where(scope.machine_visible(principal), Sale.period_end >= since)
        )
    ).one()
    return Totals(units=int(row[0]), revenue=row[1] if row[1] is not None else Decimal("0.00"))


async def _product_sales(
    session: AsyncSession, principal: Principal, *, since: datetime
) -> list[ProductSales]:
    """Every live product of the organization with its sales since `since`, best first."""
    sold = (
        select(
            Sale.product_id.label("product_id"),
            func.sum(Sale.units).label("units"),
            func.sum(Sale.revenue).label("revenue"),
        )
        .join(Machine, Machine.device_id == Sale.device_id)
        .where(scope.machine_visible(principal), Sale.period_end >= since)
        .group_by(Sale.product_id)
        .subquery()
    )
    rows = await session.execute(
        select(Product.id, Product.name, sold.c.units, sold.c.revenue)
        .outerjoin(sold, sold.c.product_id == Product.id)
        .where(Product.organization_id == principal.org_id, Product.archived_at.is_(None))
    )
    found = [
        ProductSales(
            product_id=pid,
            name=name,
            units=int(units or 0),
            revenue=revenue if revenue is not None else Decimal("0.00"),  # sum keeps Money
        )
        for pid, name, units, revenue in rows
    ]
    found.sort(key=lambda p: (-p.units, -p.revenue, p.name))
    return found


async def _sold_out_machines(session: AsyncSession, principal: Principal) -> list[MachineRow]:
    rows = await session.execute(
        select(Machine, Device.name, func.count())
        .join(Device, _names())
        .join(Cabinet, Cabinet.device_id == Machine.device_id)
        .join(SlotStock, SlotStock.cabinet_id == Cabinet.id)
        .where(scope.machine_visible(principal), _sold_out_condition())
        .group_by(Machine.device_id, Device.name)
        .order_by(func.count().desc(), Device.name)
    )
    return [_row(m, name, sold_out=n) for m, name, n in rows]


async def _not_audited(
    session: AsyncSession, principal: Principal, *, before: datetime
) -> list[MachineRow]:
    rows = await session.execute(
        select(Machine, Device.name)
        .join(Device, _names())
        .where(
            scope.machine_visible(principal),
            or_(Machine.last_audit_at.is_(None), Machine.last_audit_at < before),
        )
        .order_by(Machine.last_audit_at.is_not(None), Machine.last_audit_at, Device.name)
    )
    return [_row(m, name) for m, name in rows]


def _row(machine: Machine, name: str, *, sold_out: int = 0) -> MachineRow:
    return MachineRow(
        device_id=machine.device_id,
        name=name,
        location=machine.location,
        last_audit_at=machine.last_audit_at,
        sold_out=sold_out,
    )


async def machine_names(
    session: AsyncSession, principal: Principal, device_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Device names of the caller's machines among `device_ids`."""
    ids = set(device_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(Machine.device_id, Device.name)
        .join(Device, _names())
        .where(Machine.device_id.in_(ids), scope.machine_visible(principal))
    )
    return {device_id: name for device_id, name in rows}


async def machine_page(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, now: datetime
) -> MachineView:
    """One machine: cabinets with their slot grids, sales per day, recent audits."""
    machine = await scope.get_machine(session, principal, device_id)
    name = (await machine_names(session, principal, [device_id])).get(device_id)
    if name is None:  # the device was deleted: its vending side goes with it
        raise NotFound("vending machine not found", code="MACHINE_NOT_FOUND")
    found = await cabinets_of(session, device_id)
    current = await current_planograms(session, [c.id for c in found])
    cabinets = [await _cabinet(session, c, current.get(c.id)) for c in found]
    days, units, revenue = await _daily(session, device_id, now=now)
    audits = await session.scalars(
        select(Audit)
        .options(defer(Audit.raw))
        .where(Audit.device_id == device_id)
        .order_by(Audit.read_at.desc(), Audit.id.desc())
        .limit(20)
    )
    return MachineView(machine, name, cabinets, days, units, revenue, list(audits))


async def _cabinet(
    session: AsyncSession, cabinet: Cabinet, planogram: Planogram | None
) -> CabinetView:
    if planogram is None:
        return CabinetView(cabinet, None, [])
    stocks = {
        s.slot: s
        for s in await session.scalars(select(SlotStock).where(SlotStock.cabinet_id == cabinet.id))
    }
    slots = []
    for slot, product in await slots_of(session, planogram.id):
        stock = stocks.get(slot.slot)
        estimate = estimated_stock(stock)
        slots.append(
            SlotView(
                slot=slot.slot,
                product=product.name if product else None,
                price=slot.price,
                capacity=slot.capacity,
                par_level=slot.par_level,
                stock=estimate,
                sold_out=(stock is not None and stock.sold_out_at is not None) or estimate == 0,
            )
        )
    return CabinetView(cabinet, planogram, slots)


async def slots_of(
    session: AsyncSession, planogram_id: uuid.UUID
) -> list[tuple[PlanogramSlot, Product | None]]:
    """A planogram version's slots with their products, by slot code."""
    rows = await session.execute(
        select(PlanogramSlot, Product)
        .outerjoin(Product, Product.id == PlanogramSlot.product_id)
        .where(PlanogramSlot.planogram_id == planogram_id)
        .order_by(PlanogramSlot.slot)
    )
    return [(slot, product) for slot, product in rows]


async def _daily(
    session: AsyncSession, device_id: uuid.UUID, *, now: datetime
) -> tuple[list[date], list[int], list[Decimal]]:
    """Units and revenue per UTC day over the last CHART_DAYS days (empty days are 0)."""
    first = now.astimezone(UTC).date() - timedelta(days=CHART_DAYS - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    rows = await session.execute(
        select(Sale.period_end, func.sum(Sale.units), func.sum(Sale.revenue))
        .where(Sale.device_id == device_id, Sale.period_end >= since)
        .group_by(Sale.period_end)
    )
    days = [first + timedelta(days=i) for i in range(CHART_DAYS)]
    units = dict.fromkeys(days, 0)
    revenue = dict.fromkeys(days, Decimal(0))
    for end, n, money in rows:
        day = end.astimezone(UTC).date()
        if day in units:
            units[day] += int(n or 0)
            revenue[day] += money or 0  # sum() keeps the Money type: a Decimal
    return days, list(units.values()), [r + Decimal("0.00") for r in revenue.values()]


async def products(session: AsyncSession, principal: Principal) -> list[Product]:
    """The organization's live products by name."""
    rows = await session.scalars(
        select(Product)
        .where(Product.organization_id == principal.org_id, Product.archived_at.is_(None))
        .order_by(Product.name, Product.id)
    )
    return list(rows)


@dataclass(frozen=True, slots=True)
class PlanogramView:
    """One planogram version with its machine, cabinet, slots and sibling versions."""

    planogram: Planogram
    cabinet: Cabinet
    machine_name: str
    slots: list[tuple[PlanogramSlot, Product | None]]
    history: list[Planogram]
    current: bool
    extra: dict[str, Any] = field(default_factory=dict)


async def planogram_page(
    session: AsyncSession, principal: Principal, planogram_id: uuid.UUID
) -> PlanogramView:
    """One planogram version of a machine the caller may see, or 404."""
    row = (
        await session.execute(
            select(Planogram, Cabinet)
            .join(Cabinet, Cabinet.id == Planogram.cabinet_id)
            .join(Machine, Machine.device_id == Cabinet.device_id)
            .where(Planogram.id == planogram_id, scope.machine_visible(principal))
        )
    ).one_or_none()
    if row is None:
        raise NotFound("planogram not found", code="PLANOGRAM_NOT_FOUND")
    planogram, cabinet = row
    names = await machine_names(session, principal, [cabinet.device_id])
    if cabinet.device_id not in names:
        raise NotFound("planogram not found", code="PLANOGRAM_NOT_FOUND")
    history = list(
        await session.scalars(
            select(Planogram)
            .where(Planogram.cabinet_id == cabinet.id)
            .order_by(Planogram.version.desc())
        )
    )
    return PlanogramView(
        planogram=planogram,
        cabinet=cabinet,
        machine_name=names[cabinet.device_id],
        slots=await slots_of(session, planogram.id),
        history=history,
        current=history[0].id == planogram.id,
    )
