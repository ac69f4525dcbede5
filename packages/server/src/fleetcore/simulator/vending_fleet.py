"""The simulated vending fleet of an organization, made or reused through the database.

Like simulator/provision.py this acts with the database's rights (the settings `fleetcore
serve` uses), not a user's: products of the simulated catalogue (by SKU), machines as
devices (by serial VSIM-0001…) with their cabinets and a first planogram each, a route
holding them, and for the demo a driver assigned to it. Running it again reuses all of
it; a reused device gets a fresh token (the previous one is revoked).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth import users
from fleetcore.auth.models import User
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import UserIn
from fleetcore.auth.security import hash_password
from fleetcore.db import Database, utcnow
from fleetcore.simulator.provision import (
    ensure_devices,
    ensure_organization,
    ensure_profile,
    record_provisioning,
)
from fleetcore.simulator.vending import CATALOGUE, MachinePlan, machine_plan
from fleetcore.vending.machines import cabinets_of, ensure_machine
from fleetcore.vending.models import (
    Cabinet,
    Machine,
    Planogram,
    PlanogramSlot,
    Product,
    Route,
    RouteDriver,
)

PROFILE = "Vending machines"
ROUTE = "Simulated vending route"
LABEL = "simulated-vending"


@dataclass(frozen=True, slots=True)
class SimMachine:
    """A provisioned simulated machine: its layout, device and token (in memory only)."""

    plan: MachinePlan
    device_id: uuid.UUID
    token: str


@dataclass(frozen=True, slots=True)
class VendingFleet:
    """What provisioning made or found."""

    organization_id: uuid.UUID
    route_id: uuid.UUID
    machines: list[SimMachine]
    created: int
    reused: int
    products_created: int


async def _products(session: AsyncSession, org_id: uuid.UUID) -> tuple[dict[str, uuid.UUID], int]:
    found = {
        p.sku: p.id
        for p in await session.scalars(
            select(Product).where(
                Product.organization_id == org_id,
                Product.sku.in_([i.sku for i in CATALOGUE]),
            )
        )
        if p.sku is not None
    }
    created = 0
    for item in CATALOGUE:
        if item.sku in found:
            continue
        product = Product(
            organization_id=org_id,
            name=item.name,
            sku=item.sku,
            ean=item.ean,
            category=item.category,
            unit_cost=item.unit_cost,
            default_price=item.price,
            case_size=item.case_size,
        )
        session.add(product)
        await session.flush()
        found[item.sku], created = product.id, created + 1
    return found, created


async def _route(session: AsyncSession, org_id: uuid.UUID, name: str) -> Route:
    route = await session.scalar(
        select(Route).where(Route.organization_id == org_id, Route.name == name)
    )
    if route is None:
        route = Route(organization_id=org_id, name=name, description="Simulated machines")
        session.add(route)
        await session.flush()
    return route


async def _cabinets(
    session: AsyncSession, machine: Machine, plan: MachinePlan
) -> dict[str, Cabinet]:
    """The plan's cabinets by name: the default "main" one renamed, the others added."""
    existing = await cabinets_of(session, machine.device_id)
    by_name = {c.name: c for c in existing}
    for position, name in enumerate(plan.cabinets):
        if name in by_name:
            continue
        spare = by_name.pop("main", None) if position == 0 and len(existing) == 1 else None
        if spare is not None:
            spare.name, spare.position = name, position
            by_name[name] = spare
        else:
            cabinet = Cabinet(
                organization_id=machine.organization_id,
                device_id=machine.device_id,
                name=name,
                position=position,
            )
            session.add(cabinet)
            by_name[name] = cabinet
    await session.flush()
    return by_name


async def _planograms(
    session: AsyncSession,
    plan: MachinePlan,
    cabinets: dict[str, Cabinet],
    products: dict[str, uuid.UUID],
) -> None:
    """Version 1 of each cabinet's planogram, unless it has one (a manager's changes stay)."""
    for name, cabinet in cabinets.items():
        if name not in plan.cabinets:
            continue
        if await session.scalar(select(Planogram.id).where(Planogram.cabinet_id == cabinet.id)):
            continue
        planogram = Planogram(
            organization_id=cabinet.organization_id,
            cabinet_id=cabinet.id,
            version=1,
            source="manual",
            note="Simulated machine's layout",
        )
        session.add(planogram)
        await session.flush()
        session.add_all(
            PlanogramSlot(
                planogram_id=planogram.id,
                slot=s.slot,
                product_id=products[s.sku],
                capacity=s.capacity,
                par_level=s.capacity,
                price=s.price,
            )
            for s in plan.slots
            if s.cabinet == name
        )
    await session.flush()


async def provision_vending(
    database: Database, *, organization: str, count: int, seed: int = 0, route: str = ROUTE
) -> VendingFleet:
    """Create or reuse the catalogue, `count` machines and the route (and the organization)."""
    async with database.session(write=True) as session:
        org = await ensure_organization(session, organization)
        products, products_created = await _products(session, org.id)
        profile, _ = await ensure_profile(
            session,
            org.id,
            PROFILE,
            description="Vending machines sending DEX audits (fleetcore simulate --kind vending)",
            telemetry_keys=[],
        )
        the_route = await _route(session, org.id, route)
        plans = [machine_plan(i, seed) for i in range(1, count + 1)]
        made = await ensure_devices(
            session,
            org.id,
            [p.serial for p in plans],
            profile_id=profile.id,
            label=LABEL,
            properties=lambda index: {"simulated": "vending", "model": plans[index - 1].model},
            names=[p.name for p in plans],
        )
        machines: list[SimMachine] = []
        for plan, one in zip(plans, made, strict=True):
            device, token = one.device, one.token
            machine = await ensure_machine(session, organization_id=org.id, device_id=device.id)
            if machine.route_id is None:
                machine.route_id = the_route.id
            machine.location = machine.location or plan.location
            machine.dex_serial = machine.dex_serial or plan.serial
            cabinets = await _cabinets(session, machine, plan)
            await _planograms(session, plan, cabinets, products)
            machines.append(SimMachine(plan, device.id, token))
        created, reused = record_provisioning(
            session,
            made,
            action="simulator.provision_vending",
            organization_id=org.id,
            target_type="vending_route",
            target_id=the_route.id,
            products=products_created,
        )
        await session.commit()
        return VendingFleet(org.id, the_route.id, machines, created, reused, products_created)


async def ensure_driver(
    database: Database, *, organization_id: uuid.UUID, route_id: uuid.UUID, email: str
) -> str:
    """The route's driver (created once), given a fresh password every time: returned."""
    password = secrets.token_urlsafe(12)
    async with database.session(write=True) as session:
        user = await session.scalar(select(User).where(User.email == email))
        if user is None:
            data = UserIn(
                email=email, password=password, role=Role.DRIVER, organization_id=organization_id
            )
            user = await users.create_user(session, None, data=data)
        else:
            user.password_hash = await hash_password(password)
            user.password_changed_at = utcnow()
            user.is_active = True
        assigned = await session.get(RouteDriver, (route_id, user.id))
        if assigned is None:
            session.add(RouteDriver(route_id=route_id, user_id=user.id))
        await session.commit()
    return password
