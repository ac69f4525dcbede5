"""Service orders: created for a route and a date with their visits and pick list in one
transaction, then moved draft → issued → in_progress → completed (or cancelled).

Every state change is one conditional UPDATE ... WHERE id = ? AND state IN (...): of two
concurrent starts or completes the database lets one through, the other finds no row and
answers 409 ORDER_STATE. The driver's work on an order (fills, cash) is in vending.fills.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, Forbidden, Invalid, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.vending import picklist
from fleetcore.vending.machines import cabinets_of, current_planograms, estimated_stock
from fleetcore.vending.models import (
    Machine,
    PickLine,
    PlanogramSlot,
    Product,
    ServiceOrder,
    ServiceVisit,
    SlotStock,
)
from fleetcore.vending.routes import is_route_driver
from fleetcore.vending.scope import get_order, get_route, order_visible
from fleetcore.vending.service_schemas import OrderIn, OrderState

# The states each state is reached from; completed and cancelled are final.
FROM: dict[OrderState, tuple[OrderState, ...]] = {
    OrderState.ISSUED: (OrderState.DRAFT,),
    OrderState.IN_PROGRESS: (OrderState.ISSUED,),
    OrderState.COMPLETED: (OrderState.IN_PROGRESS,),
    OrderState.CANCELLED: (OrderState.DRAFT, OrderState.ISSUED, OrderState.IN_PROGRESS),
}
# The column stamped when an order reaches each state.
STAMP = {
    OrderState.ISSUED: "issued_at",
    OrderState.IN_PROGRESS: "started_at",
    OrderState.COMPLETED: "completed_at",
    OrderState.CANCELLED: "cancelled_at",
}


def audit_order(
    session: AsyncSession, principal: Principal, action: str, order: ServiceOrder, **details: Any
) -> None:
    """Record a change of a service order in the audit log (commits with the change)."""
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=order.organization_id,
        target_type="vending_service_order",
        target_id=order.id,
        details={"route_id": str(order.route_id), "state": order.state, **details},
    )


def wrong_state(order: ServiceOrder, action: str) -> Conflict:
    """The 409 for an action the order's current state does not allow."""
    return Conflict(
        f"a {order.state} service order cannot be {action}",
        code="ORDER_STATE",
        details={"state": order.state},
    )


# -- creation ------------------------------------------------------------------------------


@dataclass
class Plan:
    """An order's visits (device ids in visit order) and pick lines, before they are stored."""

    device_ids: list[uuid.UUID] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)


async def plan_route(session: AsyncSession, org_id: uuid.UUID, route_id: uuid.UUID) -> Plan:
    """What each machine of the route needs, from its current planograms and stock estimates."""
    plan = Plan()
    plan.device_ids = list(
        await session.scalars(
            select(Machine.device_id)
            .join(Device, Device.id == Machine.device_id)
            .where(
                Machine.route_id == route_id,
                Machine.organization_id == org_id,
                Device.deleted_at.is_(None),
            )
            .order_by(Machine.route_position, Device.name, Machine.device_id)
        )
    )
    for device_id in plan.device_ids:
        cabinets = await cabinets_of(session, device_id)
        current = await current_planograms(session, [c.id for c in cabinets])
        for cabinet in cabinets:
            if cabinet.id not in current:
                continue
            rows = await session.execute(
                select(PlanogramSlot, Product.case_size, SlotStock)
                .join(Product, Product.id == PlanogramSlot.product_id)  # empty slots: no need
                .outerjoin(
                    SlotStock,
                    (SlotStock.cabinet_id == cabinet.id) & (SlotStock.slot == PlanogramSlot.slot),
                )
                .where(PlanogramSlot.planogram_id == current[cabinet.id].id)
                .order_by(PlanogramSlot.slot)
            )
            for slot, case_size, stock_row in rows:
                stock = estimated_stock(stock_row)
                need = picklist.need(
                    capacity=slot.capacity,
                    par_level=slot.par_level,
                    stock=stock,
                    case_size=case_size,
                )
                if need.planned == 0:
                    continue
                plan.lines.append(
                    {
                        "organization_id": org_id,
                        "device_id": device_id,
                        "cabinet_id": cabinet.id,
                        "slot": slot.slot,
                        "product_id": slot.product_id,
                        "capacity": slot.capacity,
                        "par_level": slot.par_level,
                        "estimated_stock": stock,
                        "planned": need.planned,
                    }
                )
    return plan


async def _check_driver(
    session: AsyncSession, org_id: uuid.UUID, route_id: uuid.UUID, driver_id: uuid.UUID
) -> None:
    user = await session.scalar(
        select(User).where(
            User.id == driver_id,
            User.organization_id == org_id,
            User.role == Role.DRIVER.value,
            User.is_active.is_(True),
        )
    )
    if user is None or not await is_route_driver(session, route_id, driver_id):
        raise Invalid(
            "driver_id must be an active driver assigned to the route",
            code="NOT_A_DRIVER",
            details={"field": "driver_id"},
        )


async def create_order(
    session: AsyncSession, principal: Principal, route_id: uuid.UUID, *, data: OrderIn
) -> ServiceOrder:
    """A draft order for the route on a date, with one visit per machine and its pick list."""
    route = await get_route(session, principal, route_id)  # 404 before 403: no probing
    principal.require(Role.MANAGER)
    if data.driver_id is not None:
        await _check_driver(session, route.organization_id, route.id, data.driver_id)
    plan = await plan_route(session, route.organization_id, route.id)
    if not plan.device_ids:
        raise Invalid("the route has no machines", code="ROUTE_EMPTY")
    order = ServiceOrder(
        id=uuid.uuid4(),
        organization_id=route.organization_id,
        route_id=route.id,
        service_date=data.service_date,
        state=OrderState.DRAFT,
        driver_id=data.driver_id,
        note=data.note,
        created_by=principal.user_id,
        created_at=utcnow(),
    )
    return await store_order(session, principal, order, plan)


async def store_order(
    session: AsyncSession, principal: Principal, order: ServiceOrder, plan: Plan
) -> ServiceOrder:
    """Insert the order, its visits and its lines and commit them together, or none of them."""
    try:
        session.add(order)
        await session.flush()
        if plan.device_ids:
            await session.execute(
                insert(ServiceVisit),
                [
                    {
                        "order_id": order.id,
                        "device_id": device_id,
                        "organization_id": order.organization_id,
                        "position": position,
                    }
                    for position, device_id in enumerate(plan.device_ids)
                ],
            )
        if plan.lines:
            await session.execute(
                insert(PickLine), [{"order_id": order.id, **line} for line in plan.lines]
            )
    except IntegrityError:
        # A machine, cabinet or product removed while the plan was made (or a duplicate
        # line): the whole order goes, never part of it.
        await session.rollback()
        raise Conflict(
            "the route changed while the order was made; retry", code="ORDER_NOT_CREATED"
        ) from None
    audit_order(
        session,
        principal,
        "vending_service_order.create",
        order,
        service_date=order.service_date.isoformat(),
        visits=len(plan.device_ids),
        lines=len(plan.lines),
    )
    await session.commit()
    return order


# -- reading -------------------------------------------------------------------------------


async def list_orders(
    session: AsyncSession,
    principal: Principal,
    *,
    route_id: uuid.UUID | None,
    state: OrderState | None,
    service_date: date | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[ServiceOrder], str | None]:
    """The orders the caller may see (a driver: their routes'), newest first."""
    query = select(ServiceOrder).where(order_visible(principal))
    if route_id is not None:
        query = query.where(ServiceOrder.route_id == route_id)
    if state is not None:
        query = query.where(ServiceOrder.state == state)
    if service_date is not None:
        query = query.where(ServiceOrder.service_date == service_date)
    query = paginate(
        query,
        sort=ServiceOrder.created_at,
        id_column=ServiceOrder.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    return page_of((await session.scalars(query)).all(), limit=limit, sort_attr="created_at")


# -- state changes -------------------------------------------------------------------------


async def _move(
    session: AsyncSession,
    order: ServiceOrder,
    to: OrderState,
    *where: ColumnElement[bool],
    **values: Any,
) -> ServiceOrder | None:
    """UPDATE the order to `to` if still in a state it may leave for it; None if not moved."""
    statement = (
        update(ServiceOrder)
        .where(ServiceOrder.id == order.id, ServiceOrder.state.in_(FROM[to]), *where)
        .values(state=to, **{STAMP[to]: utcnow()}, **values)
        .returning(ServiceOrder)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def issue_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> ServiceOrder:
    """draft → issued (managers): the pick list is final."""
    order = await get_order(session, principal, order_id)
    principal.require(Role.MANAGER)
    moved = await _move(session, order, OrderState.ISSUED)
    if moved is None:
        await session.refresh(order)
        raise wrong_state(order, "issued")
    audit_order(session, principal, "vending_service_order.issue", moved, previous="draft")
    await session.commit()
    return moved


async def start_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> ServiceOrder:
    """issued → in_progress: the assigned driver (an order without one becomes theirs) or a
    manager."""
    order = await get_order(session, principal, order_id)
    if principal.is_driver:
        me = principal.user_id
        moved = await _move(
            session,
            order,
            OrderState.IN_PROGRESS,
            (ServiceOrder.driver_id.is_(None)) | (ServiceOrder.driver_id == me),
            driver_id=func.coalesce(ServiceOrder.driver_id, me),
        )
    else:
        principal.require(Role.MANAGER)
        moved = await _move(session, order, OrderState.IN_PROGRESS)
    if moved is None:
        await session.refresh(order)
        if order.state in FROM[OrderState.IN_PROGRESS]:
            raise not_yours()
        raise wrong_state(order, "started")
    audit_order(session, principal, "vending_service_order.start", moved, previous="issued")
    await session.commit()
    return moved


def not_yours() -> Forbidden:
    """The 403 for a driver acting on an order assigned to another driver."""
    return Forbidden("this service order is assigned to another driver", code="NOT_YOUR_ORDER")


def drivers_own(principal: Principal) -> list[ColumnElement[bool]]:
    """The extra condition on an order a driver acts on: assigned to them."""
    return [ServiceOrder.driver_id == principal.user_id] if principal.is_driver else []


async def complete_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID, *, skip_unvisited: bool
) -> ServiceOrder:
    """in_progress → completed (the assigned driver or a manager): every visit recorded,
    unless skip_unvisited says the others were not visited."""
    order = await get_order(session, principal, order_id)  # 404 before 403: no probing
    if not principal.is_driver:
        principal.require(Role.MANAGER)
    unserviced = select(ServiceVisit.device_id).where(
        ServiceVisit.order_id == order.id, ServiceVisit.serviced_at.is_(None)
    )
    conditions = drivers_own(principal)
    if not skip_unvisited:
        # In the same UPDATE: a visit recorded concurrently is either seen or waits for us.
        conditions.append(~exists(unserviced))
    skipped = [str(d) for d in await session.scalars(unserviced)] if skip_unvisited else []
    moved = await _move(session, order, OrderState.COMPLETED, *conditions)
    if moved is None:
        await session.refresh(order)
        if order.state != OrderState.IN_PROGRESS:
            raise wrong_state(order, "completed")
        if principal.is_driver and order.driver_id != principal.user_id:
            raise not_yours()
        missing = [str(d) for d in await session.scalars(unserviced)]
        raise Conflict(
            "some machines have no recorded visit: record them or send skip_unvisited",
            code="VISITS_UNSERVICED",
            details={"device_ids": missing},
        )
    audit_order(
        session,
        principal,
        "vending_service_order.complete",
        moved,
        previous="in_progress",
        skipped=skipped,
    )
    await session.commit()
    return moved


async def cancel_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> ServiceOrder:
    """draft, issued or in_progress → cancelled (managers)."""
    order = await get_order(session, principal, order_id)
    principal.require(Role.MANAGER)
    previous = order.state
    moved = await _move(session, order, OrderState.CANCELLED)
    if moved is None:
        await session.refresh(order)
        raise wrong_state(order, "cancelled")
    audit_order(session, principal, "vending_service_order.cancel", moved, previous=previous)
    await session.commit()
    return moved


async def hold(
    session: AsyncSession, principal: Principal, order: ServiceOrder, state: OrderState
) -> None:
    """Keep the order in `state` until this transaction commits, or raise 409/403.

    A no-op UPDATE on the order's row: PostgreSQL locks the row (a concurrent complete or
    cancel waits for us, or we see its result), SQLite has one writer at a time anyway.
    """
    held = await session.scalar(
        update(ServiceOrder)
        .where(ServiceOrder.id == order.id, ServiceOrder.state == state, *drivers_own(principal))
        .values(state=ServiceOrder.state)
        .returning(ServiceOrder.id)
        .execution_options(synchronize_session=False)
    )
    if held is None:
        await session.refresh(order)
        if order.state != state:
            raise wrong_state(order, "changed")
        raise not_yours()


async def get_line(session: AsyncSession, order: ServiceOrder, line_id: int) -> PickLine:
    """A pick line of the order, or 404."""
    line = await session.scalar(
        select(PickLine).where(PickLine.id == line_id, PickLine.order_id == order.id)
    )
    if line is None:
        raise NotFound("pick line not found", code="PICK_LINE_NOT_FOUND")
    return line
