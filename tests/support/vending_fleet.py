"""A small vending fleet written straight through the models, for the vending page tests.

Two machines on two routes (the tenant's driver drives the first), four products, a
planogram with two versions, slot stock with a sold-out slot, audits (one damaged), sales
at known times, and a service order per route. The figures the pages must show are
derived from what is written here (see SALES).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.vending.machines import cabinets_of, ensure_machine
from fleetcore.vending.models import (
    Audit,
    Machine,
    PickLine,
    Planogram,
    PlanogramSlot,
    Product,
    Route,
    RouteDriver,
    Sale,
    ServiceOrder,
    ServiceVisit,
    SlotStock,
)
from tests.support.tenants import Tenant

# (product, slot, days ago, units, revenue) sold by the first machine; the second sold 100
# units 40 days ago, outside every period the fleet page shows.
SALES = (
    ("Cola", "A1", 0, 3, Decimal("7.50")),
    ("Chips", "A2", 3, 5, Decimal("9.00")),
    ("Water", "A3", 20, 7, Decimal("8.40")),
)
TODAY = (3, "7.50")
WEEK = (8, "16.50")
MONTH = (15, "24.90")
DAMAGED_WARNING = "G85 CRC does not match either byte order"


@dataclass
class Fleet:
    """Ids of what seed_fleet wrote."""

    machine: uuid.UUID  # on the driver's route
    other_machine: uuid.UUID  # on a route without the driver
    route: uuid.UUID
    other_route: uuid.UUID
    order: uuid.UUID  # the driver's route, issued, today
    other_order: uuid.UUID
    planogram: uuid.UUID  # current version (2) of the first machine's cabinet
    old_planogram: uuid.UUID
    cabinet: uuid.UUID
    damaged_audit: int
    products: dict[str, uuid.UUID] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)  # slot -> pick line id


async def seed_fleet(
    db: Database, tenant: Tenant, machine: str, other_machine: str, *, now: datetime
) -> Fleet:
    """Write the fleet for two existing devices of `tenant`."""
    org = tenant.org_id
    async with db.session(write=True) as session:
        products = {
            name: Product(
                organization_id=org,
                name=name,
                sku=sku,
                category="snacks",
                unit_cost=cost,
                default_price=price,
                case_size=case,
            )
            for name, sku, cost, price, case in (
                ("Cola", "COLA-33", Decimal("0.60"), Decimal("2.50"), 24),
                ("Chips", "CHIPS-50", Decimal("0.45"), Decimal("1.80"), 12),
                ("Water", "WATER-50", Decimal("0.20"), Decimal("1.20"), None),
                ("Gum", "GUM-10", Decimal("0.15"), Decimal("0.90"), None),
            )
        }
        session.add_all(products.values())
        route = Route(organization_id=org, name="North loop", description="Mondays")
        other_route = Route(organization_id=org, name="South loop")
        session.add_all([route, other_route])
        await session.flush()
        session.add(RouteDriver(route_id=route.id, user_id=tenant.user_ids[Role.DRIVER]))

        first = await ensure_machine(session, organization_id=org, device_id=uuid.UUID(machine))
        second = await ensure_machine(
            session, organization_id=org, device_id=uuid.UUID(other_machine)
        )
        _place(first, route, "Hall A", now - timedelta(hours=1))
        _place(second, other_route, "Station", None)
        cabinet = (await cabinets_of(session, first.device_id))[0]

        old = Planogram(
            organization_id=org,
            cabinet_id=cabinet.id,
            version=1,
            effective_from=now - timedelta(days=60),
        )
        current = Planogram(
            organization_id=org,
            cabinet_id=cabinet.id,
            version=2,
            effective_from=now - timedelta(days=30),
            note="summer mix",
        )
        session.add_all([old, current])
        await session.flush()
        layout = (
            ("A1", "Cola", 10, 8, Decimal("2.50")),
            ("A2", "Chips", 8, 6, Decimal("1.80")),
            ("A3", "Water", 12, 10, Decimal("1.20")),
        )
        for slot, name, capacity, par, price in layout:
            for planogram in (old, current):
                session.add(
                    PlanogramSlot(
                        planogram_id=planogram.id,
                        slot=slot,
                        product_id=products[name].id,
                        capacity=capacity,
                        par_level=par,
                        price=price,
                    )
                )
        # A1: filled to 10, 4 sold (6 left); A2: filled to 8, all sold; A3: never filled.
        session.add_all(
            [
                SlotStock(
                    cabinet_id=cabinet.id,
                    slot="A1",
                    organization_id=org,
                    fill_level=10,
                    filled_at=now - timedelta(days=2),
                    sold_since_fill=4,
                ),
                SlotStock(
                    cabinet_id=cabinet.id,
                    slot="A2",
                    organization_id=org,
                    fill_level=8,
                    filled_at=now - timedelta(days=2),
                    sold_since_fill=8,
                    sold_out_at=now - timedelta(hours=3),
                ),
            ]
        )

        for index, (name, slot, days, units, revenue) in enumerate(SALES):
            at = now - timedelta(days=days, minutes=5)
            audit = _audit(org, first.device_id, f"sale-{index}", at, "accepted")
            session.add(audit)
            await session.flush()
            session.add(_sale(org, audit, cabinet.id, slot, products[name].id, at, units, revenue))
        long_ago = now - timedelta(days=40)
        old_audit = _audit(org, second.device_id, "old", long_ago, "accepted")
        session.add(old_audit)
        await session.flush()
        session.add(
            _sale(org, old_audit, None, "B1", products["Gum"].id, long_ago, 100, Decimal(90))
        )
        damaged = _audit(org, first.device_id, "damaged", now - timedelta(hours=1), "damaged")
        damaged.warnings = [{"code": "crc_mismatch", "message": DAMAGED_WARNING, "line": 40}]
        session.add(damaged)

        order = ServiceOrder(
            organization_id=org, route_id=route.id, service_date=now.date(), state="issued"
        )
        other_order = ServiceOrder(
            organization_id=org, route_id=other_route.id, service_date=now.date(), state="issued"
        )
        session.add_all([order, other_order])
        await session.flush()
        session.add(ServiceVisit(order_id=order.id, device_id=first.device_id, organization_id=org))
        session.add(
            ServiceVisit(order_id=other_order.id, device_id=second.device_id, organization_id=org)
        )
        lines = {}
        for slot, name, capacity, par, estimate, planned in (
            ("A1", "Cola", 10, 8, 6, 2),
            ("A2", "Chips", 8, 6, 0, 6),
            ("A3", "Water", 12, 10, None, 10),
        ):
            line = PickLine(
                order_id=order.id,
                organization_id=org,
                device_id=first.device_id,
                cabinet_id=cabinet.id,
                slot=slot,
                product_id=products[name].id,
                capacity=capacity,
                par_level=par,
                estimated_stock=estimate,
                planned=planned,
            )
            session.add(line)
            await session.flush()
            lines[slot] = line.id
        await session.commit()
        return Fleet(
            machine=first.device_id,
            other_machine=second.device_id,
            route=route.id,
            other_route=other_route.id,
            order=order.id,
            other_order=other_order.id,
            planogram=current.id,
            old_planogram=old.id,
            cabinet=cabinet.id,
            damaged_audit=damaged.id,
            products={name: p.id for name, p in products.items()},
            lines=lines,
        )


def _place(machine: Machine, route: Route, location: str, audited: datetime | None) -> None:
    machine.route_id = route.id
    machine.location = location
    machine.last_audit_at = audited


def _audit(org: uuid.UUID, device_id: uuid.UUID, name: str, at: datetime, status: str) -> Audit:
    raw = f"DXS*{name}".encode()
    return Audit(
        organization_id=org,
        device_id=device_id,
        content_hash=hashlib.sha256(raw).hexdigest(),
        source="upload",
        read_at=at,
        received_at=at,
        status=status,
        raw=raw,
        accounted=status == "accepted",
    )


def _sale(
    org: uuid.UUID,
    audit: Audit,
    cabinet_id: uuid.UUID | None,
    slot: str,
    product_id: uuid.UUID,
    at: datetime,
    units: int,
    revenue: Decimal,
) -> Sale:
    return Sale(
        organization_id=org,
        device_id=audit.device_id,
        audit_id=audit.id,
        cabinet_id=cabinet_id,
        slot=slot,
        product_id=product_id,
        period_start=at - timedelta(hours=12),
        period_end=at,
        basis="init",
        units=units,
        revenue=revenue,
        cash_units=units,
        cash_revenue=revenue,
    )
