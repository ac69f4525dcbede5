"""The work on a service order: the manager's planned quantities (draft only), the driver's
fills (which reset the slot's stock estimate) and cash collected per machine.

Each holds the order's row in the state it needs (service_orders.hold) for its transaction,
so a fill can never land on an order completed or cancelled meanwhile.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.errors import Invalid, NotFound
from fleetcore.vending import picklist
from fleetcore.vending.machines import estimated_stock
from fleetcore.vending.models import PickLine, ServiceVisit, SlotStock
from fleetcore.vending.scope import get_order
from fleetcore.vending.service_orders import audit_order, get_line, hold
from fleetcore.vending.service_schemas import FillIn, OrderState, PlanIn, VisitIn


def _above_capacity(field: str, capacity: int) -> Invalid:
    return Invalid(
        f"{field} cannot be more than the slot's capacity ({capacity})",
        code="ABOVE_CAPACITY",
        details={"field": field, "capacity": capacity},
    )


def _require_worker(principal: Principal) -> None:
    # Drivers pass here; that the order is theirs is checked with the state (hold).
    if not principal.is_driver:
        principal.require(Role.MANAGER)


async def plan_line(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, line_id: int, *, data: PlanIn
) -> PickLine:
    """Change a line's planned quantity (managers, draft orders only)."""
    order = await get_order(session, principal, order_id)
    principal.require(Role.MANAGER)
    await hold(session, principal, order, OrderState.DRAFT)
    line = await get_line(session, order, line_id)
    if data.planned > line.capacity:
        raise _above_capacity("planned", line.capacity)
    previous = line.planned
    line.planned = data.planned
    audit_order(
        session,
        principal,
        "vending_service_order.plan",
        order,
        line_id=line.id,
        slot=line.slot,
        planned=data.planned,
        previous=previous,
    )
    await session.commit()
    return line


async def _locked_stock(session: AsyncSession, line: PickLine) -> SlotStock:
    """The slot's stock row, created if missing, locked until commit (PostgreSQL)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    await session.execute(
        dialect.insert(SlotStock)
        .values(
            cabinet_id=line.cabinet_id,
            slot=line.slot,
            organization_id=line.organization_id,
            fill_level=None,
            sold_since_fill=0,
        )
        .on_conflict_do_nothing(index_elements=[SlotStock.cabinet_id, SlotStock.slot])
    )
    # FOR UPDATE: accounting adding a sale to sold_since_fill waits, or goes first and is
    # counted in the estimate we reset.
    stock = await session.scalar(
        select(SlotStock)
        .where(SlotStock.cabinet_id == line.cabinet_id, SlotStock.slot == line.slot)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert stock is not None  # inserted above if it was missing
    return stock


async def record_fill(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, line_id: int, *, data: FillIn
) -> PickLine:
    """Record what was put in a slot (in progress; the assigned driver or a manager) and
    reset the slot's stock estimate in the same transaction.

    The slot's level becomes the estimate before the visit (0 if found sold out or unknown)
    plus what was filled, capped at capacity, with nothing sold since. Recording a line
    again corrects it: the level is recomputed from the same estimate, sales since stay.
    """
    order = await get_order(session, principal, order_id)
    _require_worker(principal)
    await hold(session, principal, order, OrderState.IN_PROGRESS)
    line = await get_line(session, order, line_id)
    if data.filled > line.capacity:
        raise _above_capacity("filled", line.capacity)
    now = utcnow()
    stock = await _locked_stock(session, line)
    correction = line.filled is not None
    if not correction:
        line.stock_before = estimated_stock(stock)
        stock.sold_since_fill = 0
        stock.filled_at = now
    stock.fill_level = picklist.level_after_fill(
        stock_before=line.stock_before,
        filled=data.filled,
        sold_out=data.sold_out,
        capacity=line.capacity,
    )
    stock.sold_out_at = now if stock.fill_level - stock.sold_since_fill <= 0 else None
    line.filled = data.filled
    line.sold_out = data.sold_out
    line.filled_at = now
    line.filled_by = principal.user_id
    audit_order(
        session,
        principal,
        "vending_service_order.fill",
        order,
        line_id=line.id,
        device_id=str(line.device_id),
        slot=line.slot,
        filled=data.filled,
        sold_out=data.sold_out,
        stock_before=line.stock_before,
        level=stock.fill_level,
        correction=correction,
    )
    await session.commit()
    return line


async def record_visit(
    session: AsyncSession,
    principal: Principal,
    order_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    data: VisitIn,
) -> ServiceVisit:
    """Record the cash collected at a machine and that it was serviced (in progress)."""
    order = await get_order(session, principal, order_id)
    _require_worker(principal)
    await hold(session, principal, order, OrderState.IN_PROGRESS)
    visit = await session.scalar(
        select(ServiceVisit).where(
            ServiceVisit.order_id == order.id, ServiceVisit.device_id == device_id
        )
    )
    if visit is None:
        raise NotFound("this machine is not in the service order", code="VISIT_NOT_FOUND")
    visit.cash_collected = data.cash_collected
    visit.serviced_at = utcnow()
    audit_order(
        session,
        principal,
        "vending_service_order.visit",
        order,
        device_id=str(device_id),
        cash_collected=str(data.cash_collected),
    )
    await session.commit()
    return visit
