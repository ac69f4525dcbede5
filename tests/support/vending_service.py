"""Vending machines with planograms and stock, and routes, for the service-order tests.

Machines are devices made through the REST API; their vending side (cabinet, products,
planogram, stock) is written to the database directly, as the catalog API would.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.vending.machines import cabinets_of, ensure_machine
from fleetcore.vending.models import Planogram, PlanogramSlot, Product, SlotStock
from tests.support.devices import new_device
from tests.support.tenants import Tenant


@dataclass(frozen=True)
class Slot:
    """A planogram slot and what is known of its stock (fill_level None: unknown)."""

    slot: str
    capacity: int = 10
    par: int = 8
    fill_level: int | None = None
    sold: int = 0
    case_size: int | None = None
    product: str | None = None  # a product's name (shared by name); default one per slot


@dataclass(frozen=True)
class VendingMachine:
    """What a test needs of a machine it made."""

    device_id: str
    cabinet_id: uuid.UUID
    products: dict[str, uuid.UUID]  # slot -> product


async def vending_machine(
    http: httpx.AsyncClient, db: Database, org: Tenant, slots: list[Slot], *, name: str = "vm"
) -> VendingMachine:
    """A device with a main cabinet, a planogram (version 1) of `slots` and their stock."""
    device_id, _ = await new_device(http, org, name=name)
    products: dict[str, uuid.UUID] = {}
    by_name: dict[str, Product] = {}
    async with db.session(write=True) as session:
        await ensure_machine(session, organization_id=org.org_id, device_id=uuid.UUID(device_id))
        cabinet = (await cabinets_of(session, uuid.UUID(device_id)))[0]
        planogram = Planogram(organization_id=org.org_id, cabinet_id=cabinet.id, version=1)
        session.add(planogram)
        for spec in slots:
            key = spec.product or f"{name} {spec.slot}"
            product = by_name.get(key) or await session.scalar(
                select(Product).where(Product.organization_id == org.org_id, Product.name == key)
            )
            if product is None:
                product = Product(
                    organization_id=org.org_id,
                    name=key,
                    sku=f"SKU-{uuid.uuid4().hex[:10]}",
                    case_size=spec.case_size,
                )
                session.add(product)
                by_name[key] = product
            await session.flush()
            products[spec.slot] = product.id
            session.add(
                PlanogramSlot(
                    planogram_id=planogram.id,
                    slot=spec.slot,
                    product_id=product.id,
                    capacity=spec.capacity,
                    par_level=spec.par,
                )
            )
            if spec.fill_level is not None or spec.sold:
                session.add(
                    SlotStock(
                        cabinet_id=cabinet.id,
                        slot=spec.slot,
                        organization_id=org.org_id,
                        fill_level=spec.fill_level,
                        sold_since_fill=spec.sold,
                    )
                )
        await session.commit()
    return VendingMachine(device_id=device_id, cabinet_id=cabinet.id, products=products)


async def make_route(
    http: httpx.AsyncClient,
    org: Tenant,
    *,
    device_ids: Sequence[str] = (),
    driver_ids: Sequence[uuid.UUID] = (),
    name: str | None = None,
) -> str:
    """A route (as a manager) with these machines in this order and these drivers."""
    headers = org.headers(Role.MANAGER)
    created = await http.post(
        "/api/v1/vending/routes",
        headers=headers,
        json={"name": name or f"route {uuid.uuid4().hex[:8]}"},
    )
    assert created.status_code == 201, created.text
    route_id: str = created.json()["id"]
    if device_ids:
        machines = await http.put(
            f"/api/v1/vending/routes/{route_id}/machines",
            headers=headers,
            json={"device_ids": list(device_ids)},
        )
        assert machines.status_code == 200, machines.text
    if driver_ids:
        drivers = await http.put(
            f"/api/v1/vending/routes/{route_id}/drivers",
            headers=headers,
            json={"user_ids": [str(u) for u in driver_ids]},
        )
        assert drivers.status_code == 200, drivers.text
    return route_id


async def make_order(
    http: httpx.AsyncClient, org: Tenant, route_id: str, **body: object
) -> dict[str, object]:
    """POST a service order for 2030-01-15 as a manager; returns its detail."""
    created = await http.post(
        f"/api/v1/vending/routes/{route_id}/service-orders",
        headers=org.headers(Role.MANAGER),
        json={"service_date": "2030-01-15", **body},
    )
    assert created.status_code == 201, created.text
    detail: dict[str, object] = created.json()
    return detail


async def move(http: httpx.AsyncClient, org: Tenant, order_id: object, *actions: str) -> None:
    """POST each action (issue, start, ...) as a manager, asserting each succeeds."""
    for action in actions:
        answer = await http.post(
            f"/api/v1/vending/service-orders/{order_id}/{action}", headers=org.headers(Role.MANAGER)
        )
        assert answer.status_code == 200, f"{action}: {answer.text}"


async def audit_of(http: httpx.AsyncClient, org: Tenant, target_id: object) -> list[dict[str, Any]]:
    """The audit events about one object, oldest first (read as the admin)."""
    response = await http.get(
        "/api/v1/audit", params={"target_id": str(target_id)}, headers=org.headers(Role.ADMIN)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items[::-1]
