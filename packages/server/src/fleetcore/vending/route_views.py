"""What the route and service-order pages show: a driver's routes and a pick list.

Read-only, scoped by vending.scope (a driver sees only the routes assigned to them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal
from fleetcore.errors import NotFound
from fleetcore.vending import scope
from fleetcore.vending.models import (
    Cabinet,
    Machine,
    PickLine,
    Product,
    Route,
    RouteDriver,
    ServiceOrder,
    ServiceVisit,
)
from fleetcore.vending.views import machine_names

ORDERS_PER_ROUTE = 20


@dataclass(frozen=True, slots=True)
class RouteView:
    """A route with its machines, drivers and latest service orders."""

    route: Route
    machines: list[tuple[Machine, str]]
    drivers: list[str]
    orders: list[ServiceOrder]


async def routes_page(
    session: AsyncSession, principal: Principal, *, today: date
) -> list[RouteView]:
    """The routes the caller may see, by name; orders from today on first, then past ones."""
    routes = list(
        await session.scalars(
            select(Route).where(scope.route_visible(principal)).order_by(Route.name, Route.id)
        )
    )
    ids = [r.id for r in routes]
    if not ids:
        return []
    machines = list(
        await session.scalars(
            select(Machine)
            .where(Machine.route_id.in_(ids), scope.machine_visible(principal))
            .order_by(Machine.route_position, Machine.location, Machine.device_id)
        )
    )
    names = await machine_names(session, principal, [m.device_id for m in machines])
    drivers = await session.execute(
        select(RouteDriver.route_id, User.email)
        .join(User, User.id == RouteDriver.user_id)
        .where(RouteDriver.route_id.in_(ids))
        .order_by(User.email)
    )
    emails: dict[uuid.UUID, list[str]] = {}
    for route_id, email in drivers:
        emails.setdefault(route_id, []).append(email)
    views = []
    for route in routes:
        orders = list(
            await session.scalars(
                select(ServiceOrder)
                .where(ServiceOrder.route_id == route.id, scope.order_visible(principal))
                .order_by(ServiceOrder.service_date.desc(), ServiceOrder.created_at.desc())
                .limit(ORDERS_PER_ROUTE)
            )
        )
        # What is due comes first, soonest first; the history after it.
        orders.sort(key=lambda o: (o.service_date < today, abs((o.service_date - today).days)))
        views.append(
            RouteView(
                route=route,
                machines=[
                    (m, names[m.device_id])
                    for m in machines
                    if m.route_id == route.id and m.device_id in names
                ],
                drivers=emails.get(route.id, []),
                orders=orders,
            )
        )
    return views


@dataclass(frozen=True, slots=True)
class Line:
    """One slot of the pick list."""

    line: PickLine
    cabinet: str
    product: str | None


@dataclass(frozen=True, slots=True)
class Stop:
    """One machine of the pick list, in visit order."""

    visit: ServiceVisit
    name: str
    location: str
    lines: list[Line]


@dataclass(frozen=True, slots=True)
class Total:
    """What to take from the warehouse for one product."""

    product: str
    sku: str | None
    planned: int
    cases: int | None


@dataclass(frozen=True, slots=True)
class PickList:
    """A service order's pick list: warehouse totals, then the stops in visit order."""

    order: ServiceOrder
    route: Route
    totals: list[Total]
    stops: list[Stop]


async def pick_list(session: AsyncSession, principal: Principal, order_id: uuid.UUID) -> PickList:
    """A service order the caller may see with its pick list, or 404."""
    order = await scope.get_order(session, principal, order_id)
    route = await session.get_one(Route, order.route_id)
    visits = list(
        await session.scalars(
            select(ServiceVisit)
            .where(ServiceVisit.order_id == order.id)
            .order_by(ServiceVisit.position, ServiceVisit.device_id)
        )
    )
    machines = {
        m.device_id: m
        for m in await session.scalars(
            select(Machine).where(Machine.device_id.in_([v.device_id for v in visits]))
        )
    }
    names = await machine_names(session, principal, machines)
    rows = await session.execute(
        select(PickLine, Cabinet.name, Product)
        .join(Cabinet, Cabinet.id == PickLine.cabinet_id)
        .outerjoin(Product, Product.id == PickLine.product_id)
        .where(PickLine.order_id == order.id)
        .order_by(PickLine.device_id, Cabinet.position, Cabinet.name, PickLine.slot)
    )
    lines: dict[uuid.UUID, list[Line]] = {}
    totals: dict[uuid.UUID | None, tuple[Product | None, int]] = {}
    for line, cabinet, product in rows:
        lines.setdefault(line.device_id, []).append(
            Line(line=line, cabinet=cabinet, product=product.name if product else None)
        )
        _, planned = totals.get(line.product_id, (product, 0))
        totals[line.product_id] = (product, planned + line.planned)
    stops = [
        Stop(
            visit=v,
            name=names.get(v.device_id, "removed machine"),
            location=machines[v.device_id].location if v.device_id in machines else "",
            lines=lines.get(v.device_id, []),
        )
        for v in visits
    ]
    return PickList(order=order, route=route, totals=_totals(totals), stops=stops)


def _totals(found: dict[uuid.UUID | None, tuple[Product | None, int]]) -> list[Total]:
    totals = [
        Total(
            product=product.name if product else "no product",
            sku=product.sku if product else None,
            planned=planned,
            cases=-(-planned // product.case_size) if product and product.case_size else None,
        )
        for product, planned in found.values()
        if planned > 0
    ]
    totals.sort(key=lambda t: t.product)
    return totals


def find_line(pick: PickList, line_id: int) -> Line:
    """One line of a pick list (the fragment a fill answers with), or 404."""
    for stop in pick.stops:
        for line in stop.lines:
            if line.line.id == line_id:
                return line
    raise NotFound("pick line not found", code="PICK_LINE_NOT_FOUND")


def find_stop(pick: PickList, device_id: uuid.UUID) -> Stop:
    """One machine of a pick list, or 404."""
    for stop in pick.stops:
        if stop.visit.device_id == device_id:
            return stop
    raise NotFound("this machine is not in the service order", code="VISIT_NOT_FOUND")
