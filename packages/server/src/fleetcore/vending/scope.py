"""What a caller may see of the vending module: their organization, and for a route driver
only the routes assigned to them, those routes' machines and service orders.

Every vending service function loads through these helpers, so the driver rule lives in
one place. Out of scope answers 404, as another organization's object does.
"""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal, Role
from fleetcore.errors import NotFound
from fleetcore.vending.models import Machine, Route, RouteDriver, ServiceOrder


def _driver_routes(principal: Principal) -> Select[uuid.UUID]:
    return select(RouteDriver.route_id).where(RouteDriver.user_id == principal.user_id)


def route_visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition on Route: the caller's organization, and a driver's own routes."""
    condition = Route.organization_id == principal.org_id
    if principal.is_driver:
        condition = condition & Route.id.in_(_driver_routes(principal))
    return condition


def machine_visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition on Machine: the caller's organization, and for a driver their routes'."""
    condition = Machine.organization_id == principal.org_id
    if principal.is_driver:
        condition = condition & Machine.route_id.in_(_driver_routes(principal))
    return condition


def order_visible(principal: Principal) -> ColumnElement[bool]:
    """SQL condition on ServiceOrder: the caller's organization, a driver's routes only."""
    condition = ServiceOrder.organization_id == principal.org_id
    if principal.is_driver:
        condition = condition & ServiceOrder.route_id.in_(_driver_routes(principal))
    return condition


async def get_machine(session: AsyncSession, principal: Principal, device_id: uuid.UUID) -> Machine:
    """The vending machine of a device the caller may see, or 404."""
    machine = await session.scalar(
        select(Machine).where(Machine.device_id == device_id, machine_visible(principal))
    )
    if machine is None:
        raise NotFound("vending machine not found", code="MACHINE_NOT_FOUND")
    return machine


async def get_route(session: AsyncSession, principal: Principal, route_id: uuid.UUID) -> Route:
    """A route the caller may see, or 404."""
    route = await session.scalar(
        select(Route).where(Route.id == route_id, route_visible(principal))
    )
    if route is None:
        raise NotFound("route not found", code="ROUTE_NOT_FOUND")
    return route


async def get_order(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> ServiceOrder:
    """A service order the caller may see, or 404."""
    order = await session.scalar(
        select(ServiceOrder).where(ServiceOrder.id == order_id, order_visible(principal))
    )
    if order is None:
        raise NotFound("service order not found", code="SERVICE_ORDER_NOT_FOUND")
    return order


def require_staff(principal: Principal, role: Role) -> None:
    """Writes other than a driver's own work need an organization role (drivers: 403)."""
    principal.require(role)
