"""Vending catalogue objects made through the real API (and routes through the models)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.vending.models import (
    Audit,
    PickLine,
    Route,
    RouteDriver,
    Sale,
    ServiceOrder,
    ServiceVisit,
)
from tests.support.tenants import Tenant

VENDING = "/api/v1/vending"


async def new_device(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """A registered device of the tenant; its id."""
    response = await client.post(
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": "vending device", "serial_number": f"VM-{uuid.uuid4().hex[:10]}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def new_machine(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    """A new device made a vending machine; the machine detail."""
    device_id = await new_device(client, tenant)
    response = await client.post(
        f"{VENDING}/machines",
        headers=tenant.headers(Role.MANAGER),
        json={"device_id": device_id, **body},
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def new_product(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    """A product of the tenant's catalogue."""
    fields: dict[str, Any] = {"name": f"product {uuid.uuid4().hex[:6]}", **body}
    response = await client.post(
        f"{VENDING}/products", headers=tenant.headers(Role.MANAGER), json=fields
    )
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


async def put_planogram(
    client: httpx.AsyncClient,
    tenant: Tenant,
    cabinet_id: str,
    slots: list[dict[str, Any]],
    note: str = "",
) -> httpx.Response:
    """PUT a cabinet's planogram as a manager."""
    return await client.put(
        f"{VENDING}/cabinets/{cabinet_id}/planogram",
        headers=tenant.headers(Role.MANAGER),
        json={"slots": slots, "note": note},
    )


async def driver_route(db: Database, tenant: Tenant, name: str | None = None) -> uuid.UUID:
    """A route of the tenant assigned to its driver user; the route's id."""
    async with db.session(write=True) as session:
        route = Route(organization_id=tenant.org_id, name=name or f"route {uuid.uuid4().hex[:6]}")
        session.add(route)
        await session.flush()
        session.add(RouteDriver(route_id=route.id, user_id=tenant.user_ids[Role.DRIVER]))
        await session.commit()
        return route.id


async def seed_sales(
    db: Database,
    tenant: Tenant,
    device_id: str,
    cabinet_id: str,
    sales: list[tuple[str, str | None, int, datetime, datetime]],
) -> None:
    """Sales (slot, product id, units, period start, period end), each from an audit of its
    own, as accounting would write them."""
    async with db.session(write=True) as session:
        for index, (slot, product_id, units, start, end) in enumerate(sales):
            audit = Audit(
                organization_id=tenant.org_id,
                device_id=uuid.UUID(device_id),
                content_hash=uuid.uuid4().hex,
                set_index=index,
                source="simulator",
                read_at=end,
                status="accepted",
                raw=b"DXS*",
                accounted=True,
            )
            session.add(audit)
            await session.flush()
            session.add(
                Sale(
                    organization_id=tenant.org_id,
                    device_id=uuid.UUID(device_id),
                    audit_id=audit.id,
                    cabinet_id=uuid.UUID(cabinet_id),
                    slot=slot,
                    product_id=uuid.UUID(product_id) if product_id else None,
                    period_start=start,
                    period_end=end,
                    basis="reset",
                    units=units,
                    revenue=Decimal(units),
                )
            )
        await session.commit()


async def seed_visits(
    db: Database,
    tenant: Tenant,
    route_id: uuid.UUID,
    device_id: str,
    cabinet_id: str,
    visits: list[tuple[datetime, dict[str, bool]]],
) -> None:
    """Completed service visits of a machine at the times given, each with a pick line per
    slot named (True: found sold out)."""
    async with db.session(write=True) as session:
        for at, slots in visits:
            order = ServiceOrder(
                organization_id=tenant.org_id,
                route_id=route_id,
                service_date=at.date(),
                state="completed",
                completed_at=at,
            )
            session.add(order)
            await session.flush()
            session.add(
                ServiceVisit(
                    order_id=order.id,
                    device_id=uuid.UUID(device_id),
                    organization_id=tenant.org_id,
                    serviced_at=at,
                )
            )
            for slot, sold_out in slots.items():
                session.add(
                    PickLine(
                        order_id=order.id,
                        organization_id=tenant.org_id,
                        device_id=uuid.UUID(device_id),
                        cabinet_id=uuid.UUID(cabinet_id),
                        slot=slot,
                        capacity=10,
                        par_level=10,
                        planned=5,
                        filled=5,
                        sold_out=sold_out,
                        filled_at=at,
                    )
                )
        await session.commit()
