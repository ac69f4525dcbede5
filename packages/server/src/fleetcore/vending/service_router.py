"""Routes and service orders API (/api/v1/vending/...).

Drivers reach these routes (AnyPrincipalDep): every service function scopes what they see
through vending.scope and refuses them every write but their own work on their orders. The
object named in the path is loaded before the role is checked, so whatever the method, an
object outside the driver's routes answers 404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from fleetcore.auth.deps import AnyPrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.vending import fills, routes, service_orders
from fleetcore.vending.order_detail import line_out, order_detail
from fleetcore.vending.scope import get_route
from fleetcore.vending.service_schemas import (
    CompleteIn,
    FillIn,
    LineOut,
    OrderDetail,
    OrderIn,
    OrderOut,
    OrderState,
    PlanIn,
    RouteDriversIn,
    RouteIn,
    RouteMachinesIn,
    RouteOut,
    RoutePatch,
    VisitIn,
    VisitOut,
)

router = APIRouter(prefix="/api/v1/vending", tags=["vending routes and service orders"])

LineId = Annotated[int, Path(ge=1, le=2**63 - 1, description="a pick line's id")]

# -- routes --------------------------------------------------------------------------------


@router.post("/routes", status_code=status.HTTP_201_CREATED, summary="Create a route")
async def create_route(data: RouteIn, session: SessionDep, principal: AnyPrincipalDep) -> RouteOut:
    """Managers. The name is unique in the organization (409 ROUTE_NAME_TAKEN)."""
    route = await routes.create_route(session, principal, data=data)
    return await routes.route_out(session, route)


@router.get("/routes", summary="List routes")
async def list_routes(
    session: SessionDep,
    principal: AnyPrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[RouteOut]:
    """By name; a driver sees the routes assigned to them."""
    rows, next_cursor = await routes.list_routes(session, principal, cursor=cursor, limit=limit)
    return Page(items=[await routes.route_out(session, r) for r in rows], next_cursor=next_cursor)


@router.get("/routes/{route_id:uuid}", summary="A route")
async def get_route_(
    route_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> RouteOut:
    """With its machines in visit order and its drivers."""
    return await routes.route_out(session, await get_route(session, principal, route_id))


@router.patch("/routes/{route_id:uuid}", summary="Change a route")
async def update_route(
    route_id: uuid.UUID, data: RoutePatch, session: SessionDep, principal: AnyPrincipalDep
) -> RouteOut:
    """Managers."""
    route = await routes.update_route(session, principal, route_id, data=data)
    return await routes.route_out(session, route)


@router.delete(
    "/routes/{route_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a route"
)
async def delete_route(
    route_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> None:
    """Managers; a route with service orders stays (409 ROUTE_HAS_ORDERS)."""
    await routes.delete_route(session, principal, route_id)


@router.put("/routes/{route_id:uuid}/machines", summary="Set a route's machines")
async def set_machines(
    route_id: uuid.UUID, data: RouteMachinesIn, session: SessionDep, principal: AnyPrincipalDep
) -> RouteOut:
    """Managers. In visit order; a machine on another route moves to this one."""
    route = await routes.set_machines(session, principal, route_id, data.device_ids)
    return await routes.route_out(session, route)


@router.put("/routes/{route_id:uuid}/drivers", summary="Assign a route's drivers")
async def set_drivers(
    route_id: uuid.UUID, data: RouteDriversIn, session: SessionDep, principal: AnyPrincipalDep
) -> RouteOut:
    """Managers. Users of the organization with the driver role (else 422 NOT_A_DRIVER)."""
    route = await routes.set_drivers(session, principal, route_id, data.user_ids)
    return await routes.route_out(session, route)


# -- service orders ------------------------------------------------------------------------


@router.post(
    "/routes/{route_id:uuid}/service-orders",
    status_code=status.HTTP_201_CREATED,
    summary="Create a service order with its pick list",
)
async def create_order(
    route_id: uuid.UUID, data: OrderIn, session: SessionDep, principal: AnyPrincipalDep
) -> OrderDetail:
    """Managers. A draft with a visit per machine and what each slot needs, in one go."""
    order = await service_orders.create_order(session, principal, route_id, data=data)
    return await order_detail(session, principal, order.id)


@router.get("/service-orders", summary="List service orders")
async def list_orders(
    session: SessionDep,
    principal: AnyPrincipalDep,
    route_id: uuid.UUID | None = None,
    state: OrderState | None = None,
    service_date: Annotated[date | None, Query(alias="date")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[OrderOut]:
    """Newest first; a driver sees their routes' orders."""
    rows, next_cursor = await service_orders.list_orders(
        session,
        principal,
        route_id=route_id,
        state=state,
        service_date=service_date,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[OrderOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/service-orders/{order_id:uuid}", summary="A service order and its pick list")
async def get_order(
    order_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> OrderDetail:
    """Totals per product for the warehouse; per machine and slot, in visit order, for the
    driver."""
    return await order_detail(session, principal, order_id)


@router.post("/service-orders/{order_id:uuid}/issue", summary="Issue a service order")
async def issue_order(
    order_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> OrderOut:
    """Managers: draft → issued (409 ORDER_STATE otherwise)."""
    return OrderOut.model_validate(await service_orders.issue_order(session, principal, order_id))


@router.post("/service-orders/{order_id:uuid}/start", summary="Start a service order")
async def start_order(
    order_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> OrderOut:
    """The assigned driver or a manager: issued → in_progress."""
    return OrderOut.model_validate(await service_orders.start_order(session, principal, order_id))


@router.post("/service-orders/{order_id:uuid}/complete", summary="Complete a service order")
async def complete_order(
    order_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    data: CompleteIn | None = None,
) -> OrderOut:
    """The assigned driver or a manager: in_progress → completed, every visit recorded
    (409 VISITS_UNSERVICED) unless {"skip_unvisited": true}."""
    skip = data.skip_unvisited if data else False
    order = await service_orders.complete_order(session, principal, order_id, skip_unvisited=skip)
    return OrderOut.model_validate(order)


@router.post("/service-orders/{order_id:uuid}/cancel", summary="Cancel a service order")
async def cancel_order(
    order_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> OrderOut:
    """Managers: from draft, issued or in_progress."""
    return OrderOut.model_validate(await service_orders.cancel_order(session, principal, order_id))


@router.patch(
    "/service-orders/{order_id:uuid}/lines/{line_id:int}", summary="Change a planned quantity"
)
async def plan_line(
    order_id: uuid.UUID,
    line_id: LineId,
    data: PlanIn,
    session: SessionDep,
    principal: AnyPrincipalDep,
) -> LineOut:
    """Managers, draft orders only; 0..capacity."""
    return line_out(await fills.plan_line(session, principal, order_id, line_id, data=data))


@router.put("/service-orders/{order_id:uuid}/lines/{line_id:int}", summary="Record a fill")
async def record_fill(
    order_id: uuid.UUID,
    line_id: LineId,
    data: FillIn,
    session: SessionDep,
    principal: AnyPrincipalDep,
) -> LineOut:
    """The assigned driver or a manager, in progress: what was put in the slot (0..capacity);
    resets the slot's stock estimate."""
    return line_out(await fills.record_fill(session, principal, order_id, line_id, data=data))


@router.put("/service-orders/{order_id:uuid}/visits/{device_id:uuid}", summary="Record a visit")
async def record_visit(
    order_id: uuid.UUID,
    device_id: uuid.UUID,
    data: VisitIn,
    session: SessionDep,
    principal: AnyPrincipalDep,
) -> VisitOut:
    """The assigned driver or a manager, in progress: cash collected (0 or more)."""
    visit = await fills.record_visit(session, principal, order_id, device_id, data=data)
    return VisitOut.model_validate(visit)
