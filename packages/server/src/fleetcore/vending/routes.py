"""Routes: named groups of machines, in visit order, and the drivers assigned to them.

Managers write; a driver reads only the routes assigned to them (vending.scope).
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.vending.models import Machine, Route, RouteDriver, ServiceOrder
from fleetcore.vending.scope import get_route, route_visible
from fleetcore.vending.service_schemas import (
    RouteIn,
    RouteMachineOut,
    RouteOut,
    RoutePatch,
)


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"a route named {name!r} exists", code="ROUTE_NAME_TAKEN", details={"field": "name"}
    )


def _audit(
    session: AsyncSession, principal: Principal, action: str, route: Route, **details: object
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=route.organization_id,
        target_type="vending_route",
        target_id=route.id,
        details={"name": route.name, **details},
    )


async def _check_name_free(
    session: AsyncSession, org_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Route.id).where(Route.organization_id == org_id, Route.name == name)
    if exclude is not None:
        query = query.where(Route.id != exclude)
    if await session.scalar(query.limit(1)):
        raise _name_taken(name)


async def route_out(session: AsyncSession, route: Route) -> RouteOut:
    """A route with its machines (visit order) and drivers."""
    rows = await session.execute(
        select(Machine.device_id, Device.name, Machine.location, Machine.route_position)
        .join(Device, Device.id == Machine.device_id)
        .where(Machine.route_id == route.id, Device.deleted_at.is_(None))
        .order_by(Machine.route_position, Device.name, Machine.device_id)
    )
    drivers = await session.scalars(
        select(RouteDriver.user_id).where(RouteDriver.route_id == route.id)
    )
    out = RouteOut.model_validate(route)
    out.machines = [
        RouteMachineOut(device_id=d, name=n, location=loc, position=p) for d, n, loc, p in rows
    ]
    out.driver_ids = sorted(drivers, key=str)
    return out


async def create_route(session: AsyncSession, principal: Principal, *, data: RouteIn) -> Route:
    """A new route (managers); its name is unique in the organization."""
    principal.require(Role.MANAGER)
    await _check_name_free(session, principal.org_id, data.name)
    route = Route(organization_id=principal.org_id, name=data.name, description=data.description)
    session.add(route)
    # The unique (organization, name) constraint decides between two concurrent creates.
    await flush_or_conflict(session, _name_taken(data.name))
    _audit(session, principal, "vending_route.create", route)
    await session.commit()
    return route


async def list_routes(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[Route], str | None]:
    """The routes the caller may see (a driver: theirs), by name."""
    query = paginate(
        select(Route).where(route_visible(principal)),
        sort=Route.name,
        id_column=Route.id,
        cursor=cursor,
        limit=limit,
    )
    return page_of((await session.scalars(query)).all(), limit=limit, sort_attr="name")


async def update_route(
    session: AsyncSession, principal: Principal, route_id: uuid.UUID, *, data: RoutePatch
) -> Route:
    """Rename or describe a route (managers)."""
    route = await get_route(session, principal, route_id)  # 404 before 403: no probing
    principal.require(Role.MANAGER)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "name" in changes and changes["name"] != route.name:
        await _check_name_free(session, route.organization_id, changes["name"], exclude=route.id)
    for field, value in changes.items():
        setattr(route, field, value)
    await flush_or_conflict(session, _name_taken(route.name))
    _audit(session, principal, "vending_route.update", route, changed=sorted(changes))
    await session.commit()
    return route


async def delete_route(session: AsyncSession, principal: Principal, route_id: uuid.UUID) -> None:
    """Delete a route without service orders (managers); its machines leave it."""
    route = await get_route(session, principal, route_id)  # 404 before 403: no probing
    principal.require(Role.MANAGER)
    # Orders are history (what was filled, cash collected): a route that has any stays.
    if await session.scalar(select(ServiceOrder.id).where(ServiceOrder.route_id == route.id)):
        raise Conflict("the route has service orders", code="ROUTE_HAS_ORDERS")
    _audit(session, principal, "vending_route.delete", route)
    await session.delete(route)
    await session.commit()


async def set_machines(
    session: AsyncSession, principal: Principal, route_id: uuid.UUID, device_ids: list[uuid.UUID]
) -> Route:
    """The route's machines in visit order (managers); a machine on another route moves here."""
    route = await get_route(session, principal, route_id)  # 404 before 403: no probing
    principal.require(Role.MANAGER)
    wanted = list(dict.fromkeys(device_ids))
    found = set(
        await session.scalars(
            select(Machine.device_id)
            .join(Device, Device.id == Machine.device_id)
            .where(
                Machine.device_id.in_(wanted),
                Machine.organization_id == principal.org_id,
                Device.deleted_at.is_(None),
            )
        )
    )
    missing = [str(d) for d in wanted if d not in found]
    if missing:
        # Another organization's device answers as one that does not exist: no hint.
        raise NotFound(
            "vending machine not found",
            code="MACHINE_NOT_FOUND",
            details={"field": "device_ids", "device_ids": missing},
        )
    await session.execute(
        update(Machine)
        .where(Machine.route_id == route.id, Machine.device_id.not_in(wanted))
        .values(route_id=None, route_position=0)
    )
    for position, device_id in enumerate(wanted):
        await session.execute(
            update(Machine)
            .where(Machine.device_id == device_id, Machine.organization_id == principal.org_id)
            .values(route_id=route.id, route_position=position)
        )
    _audit(session, principal, "vending_route.machines", route, device_ids=[str(d) for d in wanted])
    await session.commit()
    return route


async def set_drivers(
    session: AsyncSession, principal: Principal, route_id: uuid.UUID, user_ids: list[uuid.UUID]
) -> Route:
    """Assign the route's drivers (managers): active users of the organization, driver role."""
    route = await get_route(session, principal, route_id)  # 404 before 403: no probing
    principal.require(Role.MANAGER)
    wanted = list(dict.fromkeys(user_ids))
    found = set(
        await session.scalars(
            select(User.id).where(
                User.id.in_(wanted),
                User.organization_id == principal.org_id,
                User.role == Role.DRIVER.value,
                User.is_active.is_(True),
            )
        )
    )
    refused = [str(u) for u in wanted if u not in found]
    if refused:
        # The same answer for a viewer of ours and a user elsewhere: nothing to learn.
        raise Invalid(
            "only active users of your organization with the driver role can be assigned",
            code="NOT_A_DRIVER",
            details={"field": "user_ids", "user_ids": refused},
        )
    await session.execute(delete(RouteDriver).where(RouteDriver.route_id == route.id))
    session.add_all(RouteDriver(route_id=route.id, user_id=u) for u in wanted)
    # Two concurrent assignments both insert: the primary key lets one through.
    await flush_or_conflict(
        session, Conflict("the route's drivers changed meanwhile; retry", code="ROUTE_CHANGED")
    )
    _audit(session, principal, "vending_route.drivers", route, user_ids=[str(u) for u in wanted])
    await session.commit()
    return route


async def is_route_driver(session: AsyncSession, route_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """True if the user is assigned to the route."""
    count = await session.scalar(
        select(func.count())
        .select_from(RouteDriver)
        .where(RouteDriver.route_id == route_id, RouteDriver.user_id == user_id)
    )
    return bool(count)
