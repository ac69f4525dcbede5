"""Vending catalogue: products, machines made from devices, cabinets, drivers' reach."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.vending.catalog_schemas import ean_check_digit_ok
from fleetcore.vending.machines import estimated_stock
from fleetcore.vending.models import SlotStock
from tests.support.tenants import Tenant
from tests.support.vending_catalog import (
    VENDING,
    driver_route,
    new_device,
    new_machine,
    new_product,
    put_planogram,
    seed_sales,
)

PRODUCTS = f"{VENDING}/products"


# -- pure checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("4006381333931", True),  # EAN-13
        ("96385074", True),  # EAN-8
        ("036000291452", True),  # UPC-A
        ("00036000291452", True),  # GTIN-14
        ("4006381333932", False),  # wrong check digit
        ("400638133393", False),  # 12 digits, wrong check
        ("1234567", False),  # no such length
        ("40063813339a1", False),
    ],
)
def test_ean_check_digit(code: str, valid: bool) -> None:
    assert ean_check_digit_ok(code) is valid


def test_estimated_stock_is_the_fill_minus_sales_floored_at_zero() -> None:
    assert estimated_stock(None) is None
    assert estimated_stock(SlotStock(fill_level=None, sold_since_fill=2)) is None
    assert estimated_stock(SlotStock(fill_level=10, sold_since_fill=3)) == 7
    assert estimated_stock(SlotStock(fill_level=2, sold_since_fill=5)) == 0


# -- products --------------------------------------------------------------------------------


async def test_product_crud_search_and_pagination(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    manager = tenant.headers(Role.MANAGER)
    created = await client.post(
        PRODUCTS,
        headers=manager,
        json={
            "name": "Cola 0.33",
            "sku": "COLA-033",
            "ean": "4006381333931",
            "category": "drinks",
            "unit_cost": "0.45",
            "default_price": "1.50",
            "case_size": 24,
        },
    )
    assert created.status_code == 201, created.text
    cola = created.json()
    assert (cola["unit_cost"], cola["default_price"], cola["archived_at"]) == ("0.45", "1.50", None)
    for name in ("Apple chips", "Brownie", "Crisps"):
        await new_product(client, tenant, name=name, category="snacks")

    got = await client.get(f"{PRODUCTS}/{cola['id']}", headers=tenant.headers(Role.VIEWER))
    assert got.json()["sku"] == "COLA-033"
    changed = await client.patch(
        f"{PRODUCTS}/{cola['id']}", headers=manager, json={"default_price": "1.60", "ean": None}
    )
    assert (changed.json()["default_price"], changed.json()["ean"]) == ("1.60", None)

    first = await client.get(PRODUCTS, headers=manager, params={"limit": 2})
    assert [p["name"] for p in first.json()["items"]] == ["Apple chips", "Brownie"]
    rest = await client.get(
        PRODUCTS, headers=manager, params={"limit": 2, "cursor": first.json()["next_cursor"]}
    )
    assert [p["name"] for p in rest.json()["items"]] == ["Cola 0.33", "Crisps"]
    assert rest.json()["next_cursor"] is None
    found = await client.get(PRODUCTS, headers=manager, params={"q": "cola-0"})
    assert [p["name"] for p in found.json()["items"]] == ["Cola 0.33"]
    snacks = await client.get(PRODUCTS, headers=manager, params={"category": "snacks"})
    assert len(snacks.json()["items"]) == 3

    audit = await client.get(
        "/api/v1/audit", headers=tenant.headers(Role.ADMIN), params={"target_id": cola["id"]}
    )
    actions = sorted(e["action"] for e in audit.json()["items"])
    assert actions == ["vending.product.create", "vending.product.update"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"name": "x", "ean": "4006381333932"}, id="bad-check-digit"),
        pytest.param({"name": "x", "ean": "1234567"}, id="bad-length"),
        pytest.param({"name": "x", "unit_cost": "-1"}, id="negative-cost"),
        pytest.param({"name": "x", "default_price": "1.23456"}, id="too-many-decimals"),
        pytest.param({"name": "x", "case_size": 0}, id="zero-case"),
        pytest.param({"name": ""}, id="no-name"),
    ],
)
async def test_bad_product_is_422_with_the_envelope(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, object]
) -> None:
    response = await client.post(PRODUCTS, headers=tenant.headers(Role.MANAGER), json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_duplicate_sku_is_409_on_create_and_change(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await new_product(client, tenant, sku="SKU-1")
    other = await new_product(client, tenant, sku="SKU-2")
    again = await client.post(
        PRODUCTS, headers=tenant.headers(Role.MANAGER), json={"name": "y", "sku": "SKU-1"}
    )
    assert again.status_code == 409
    assert again.json()["error"] == {
        "code": "SKU_TAKEN",
        "message": "this SKU is already in use",
        "details": {"field": "sku"},
        "request_id": again.json()["error"]["request_id"],
    }
    patched = await client.patch(
        f"{PRODUCTS}/{other['id']}", headers=tenant.headers(Role.MANAGER), json={"sku": "SKU-1"}
    )
    assert patched.status_code == 409
    # Unique per organization: another one may use the same SKU.
    assert (await new_product(client, other_tenant, sku="SKU-1"))["sku"] == "SKU-1"


async def test_delete_removes_an_unused_product_and_archives_a_used_one(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    manager = tenant.headers(Role.MANAGER)
    unused = await new_product(client, tenant)
    deleted = await client.delete(f"{PRODUCTS}/{unused['id']}", headers=manager)
    assert deleted.json() == {"id": unused["id"], "outcome": "deleted"}
    assert (await client.get(f"{PRODUCTS}/{unused['id']}", headers=manager)).status_code == 404

    machine = await new_machine(client, tenant)
    cabinet_id = machine["cabinets"][0]["id"]
    used = await new_product(client, tenant, name="Used")
    sold = await new_product(client, tenant, name="Sold")
    slot = {"slot": "A1", "product_id": used["id"], "capacity": 5, "par_level": 5}
    assert (await put_planogram(client, tenant, cabinet_id, [slot])).status_code == 200
    now = utcnow()
    await seed_sales(
        db, tenant, machine["device_id"], cabinet_id, [("B1", sold["id"], 3, now, now)]
    )
    for product in (used, sold):
        archived = await client.delete(f"{PRODUCTS}/{product['id']}", headers=manager)
        assert archived.json() == {"id": product["id"], "outcome": "archived"}
        still = await client.get(f"{PRODUCTS}/{product['id']}", headers=manager)
        assert still.json()["archived_at"] is not None
    listed = await client.get(PRODUCTS, headers=manager)
    assert {p["name"] for p in listed.json()["items"]}.isdisjoint({"Used", "Sold"})
    everything = await client.get(PRODUCTS, headers=manager, params={"include_archived": True})
    assert {"Used", "Sold"} <= {p["name"] for p in everything.json()["items"]}
    # The old version still names it; a new one may not.
    again = await put_planogram(client, tenant, cabinet_id, [slot])
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "PRODUCT_NOT_AVAILABLE"


async def test_product_writes_need_a_manager(client: httpx.AsyncClient, tenant: Tenant) -> None:
    product = await new_product(client, tenant)
    for role in (Role.VIEWER, Role.OPERATOR, Role.DRIVER):
        headers = tenant.headers(role)
        refused = [
            await client.post(PRODUCTS, headers=headers, json={"name": "x"}),
            await client.patch(f"{PRODUCTS}/{product['id']}", headers=headers, json={"name": "y"}),
            await client.delete(f"{PRODUCTS}/{product['id']}", headers=headers),
        ]
        assert [r.status_code for r in refused] == [403, 403, 403], role
        listed = await client.get(PRODUCTS, headers=headers)
        assert [p["id"] for p in listed.json()["items"]] == [product["id"]]


# -- machines and cabinets ----------------------------------------------------------------------


async def test_machine_from_a_device(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    manager = tenant.headers(Role.MANAGER)
    route_id = await driver_route(db, tenant)
    device_id = await new_device(client, tenant)
    created = await client.post(
        f"{VENDING}/machines",
        headers=manager,
        json={
            "device_id": device_id,
            "location": "Lobby",
            "route_id": str(route_id),
            "dex_serial": "SN-1",
            "cabinets": [{"name": "snacks", "position": 0}, {"name": "drinks", "position": 1}],
        },
    )
    assert created.status_code == 201, created.text
    machine = created.json()
    assert (machine["location"], machine["route_id"], machine["dex_serial"]) == (
        "Lobby",
        str(route_id),
        "SN-1",
    )
    assert [c["name"] for c in machine["cabinets"]] == ["snacks", "drinks"]
    again = await client.post(f"{VENDING}/machines", headers=manager, json={"device_id": device_id})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "MACHINE_EXISTS")

    foreign = await new_device(client, other_tenant)
    stolen = await client.post(f"{VENDING}/machines", headers=manager, json={"device_id": foreign})
    assert (stolen.status_code, stolen.json()["error"]["code"]) == (404, "DEVICE_NOT_FOUND")
    no_route = await client.post(
        f"{VENDING}/machines",
        headers=manager,
        json={"device_id": await new_device(client, tenant), "route_id": str(uuid.uuid4())},
    )
    assert (no_route.status_code, no_route.json()["error"]["code"]) == (404, "ROUTE_NOT_FOUND")

    plain = await new_machine(client, tenant)
    assert [c["name"] for c in plain["cabinets"]] == ["main"]
    listed = await client.get(f"{VENDING}/machines", headers=manager)
    assert [m["device_id"] for m in listed.json()["items"]] == [device_id, plain["device_id"]]
    page = await client.get(f"{VENDING}/machines", headers=manager, params={"limit": 1})
    second = await client.get(
        f"{VENDING}/machines",
        headers=manager,
        params={"limit": 1, "cursor": page.json()["next_cursor"]},
    )
    assert [m["device_id"] for m in second.json()["items"]] == [plain["device_id"]]
    on_route = await client.get(
        f"{VENDING}/machines", headers=manager, params={"route_id": str(route_id)}
    )
    assert [m["device_id"] for m in on_route.json()["items"]] == [device_id]

    patched = await client.patch(
        f"{VENDING}/machines/{device_id}",
        headers=manager,
        json={"location": "Hall", "route_id": None, "dex_serial": None},
    )
    assert (patched.json()["location"], patched.json()["route_id"]) == ("Hall", None)
    removed = await client.delete(f"{VENDING}/machines/{device_id}", headers=manager)
    assert removed.status_code == 204
    gone = await client.get(f"{VENDING}/machines/{device_id}", headers=manager)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "MACHINE_NOT_FOUND")
    assert (await client.get(f"/api/v1/devices/{device_id}", headers=manager)).status_code == 200


async def test_machine_with_audits_is_not_removed(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    machine = await new_machine(client, tenant)
    now = utcnow()
    await seed_sales(
        db, tenant, machine["device_id"], machine["cabinets"][0]["id"], [("A1", None, 1, now, now)]
    )
    refused = await client.delete(
        f"{VENDING}/machines/{machine['device_id']}", headers=tenant.headers(Role.MANAGER)
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "MACHINE_HAS_HISTORY")


async def test_cabinet_rules(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    manager = tenant.headers(Role.MANAGER)
    machine = await new_machine(client, tenant)
    device_id = machine["device_id"]
    url = f"{VENDING}/machines/{device_id}/cabinets"
    drinks = await client.post(url, headers=manager, json={"name": "drinks", "position": 2})
    assert drinks.status_code == 201, drinks.text
    dup = await client.post(url, headers=manager, json={"name": "drinks"})
    assert (dup.status_code, dup.json()["error"]["code"]) == (409, "CABINET_NAME_TAKEN")
    rename = await client.patch(
        f"{VENDING}/cabinets/{drinks.json()['id']}", headers=manager, json={"name": "main"}
    )
    assert rename.status_code == 409
    moved = await client.patch(
        f"{VENDING}/cabinets/{drinks.json()['id']}", headers=manager, json={"position": 0}
    )
    assert moved.json()["position"] == 0
    nulled = await client.patch(
        f"{VENDING}/cabinets/{drinks.json()['id']}", headers=manager, json={"name": None}
    )
    assert nulled.status_code == 422
    # JSON false is not position 0 (pydantic would coerce it; schemathesis found it).
    for body in ({"position": False}, {"position": True}, {"position": "1"}):
        coerced = await client.patch(
            f"{VENDING}/cabinets/{drinks.json()['id']}", headers=manager, json=body
        )
        assert coerced.status_code == 422, body
    flagged = await client.post(url, headers=manager, json={"name": "flag", "position": True})
    assert flagged.status_code == 422

    main_id = machine["cabinets"][0]["id"]
    now = utcnow()
    await seed_sales(db, tenant, device_id, main_id, [("A1", None, 2, now, now)])
    refused = await client.delete(f"{VENDING}/cabinets/{main_id}", headers=manager)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "CABINET_HAS_HISTORY"
    assert "sales" in refused.json()["error"]["message"]
    deleted = await client.delete(f"{VENDING}/cabinets/{drinks.json()['id']}", headers=manager)
    assert deleted.status_code == 204
    detail = await client.get(f"{VENDING}/machines/{device_id}", headers=manager)
    assert [c["name"] for c in detail.json()["cabinets"]] == ["main"]


async def test_machine_detail_shows_slots_and_estimated_stock(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    machine = await new_machine(client, tenant)
    cabinet_id = machine["cabinets"][0]["id"]
    product = await new_product(client, tenant, name="Cola", default_price="1.50")
    slots = [
        {"slot": code, "product_id": product["id"], "capacity": 10, "par_level": 8}
        for code in ("A1", "A2", "A3")
    ]
    assert (await put_planogram(client, tenant, cabinet_id, slots)).status_code == 200
    sold_out = utcnow() - timedelta(hours=1)
    async with db.session(write=True) as session:
        for slot, fill, sold in (("A1", 10, 3), ("A2", 2, 5)):
            session.add(
                SlotStock(
                    cabinet_id=uuid.UUID(cabinet_id),
                    slot=slot,
                    organization_id=tenant.org_id,
                    fill_level=fill,
                    sold_since_fill=sold,
                    sold_out_at=sold_out if fill < sold else None,
                )
            )
        await session.commit()
    detail = await client.get(
        f"{VENDING}/machines/{machine['device_id']}", headers=tenant.headers(Role.VIEWER)
    )
    cabinet = detail.json()["cabinets"][0]
    assert cabinet["planogram_version"] == 1
    got = {
        s["slot"]: (s["estimated_stock"], s["price"], s["product_name"]) for s in cabinet["slots"]
    }
    assert got == {
        "A1": (7, "1.50", "Cola"),
        "A2": (0, "1.50", "Cola"),
        "A3": (None, "1.50", "Cola"),
    }
    assert cabinet["slots"][1]["sold_out_at"] is not None


async def test_driver_reads_their_routes_machines_only_and_writes_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    route_id = await driver_route(db, tenant)
    mine = await new_machine(client, tenant, route_id=str(route_id))
    theirs = await new_machine(client, tenant)
    product = await new_product(client, tenant)
    slot = {"slot": "A1", "product_id": product["id"], "capacity": 5, "par_level": 4}
    for machine in (mine, theirs):
        response = await put_planogram(client, tenant, machine["cabinets"][0]["id"], [slot])
        assert response.status_code == 200
        slot = {**slot, "slot": "B1"}
    driver = tenant.headers(Role.DRIVER)

    listed = await client.get(f"{VENDING}/machines", headers=driver)
    assert [m["device_id"] for m in listed.json()["items"]] == [mine["device_id"]]
    assert (
        await client.get(f"{VENDING}/machines/{mine['device_id']}", headers=driver)
    ).status_code == 200
    mine_cabinet = mine["cabinets"][0]["id"]
    current = await client.get(f"{VENDING}/cabinets/{mine_cabinet}/planogram", headers=driver)
    assert current.status_code == 200
    assert (await client.get(f"{PRODUCTS}/{product['id']}", headers=driver)).status_code == 200

    theirs_cabinet = theirs["cabinets"][0]["id"]
    hidden = [
        f"{VENDING}/machines/{theirs['device_id']}",
        f"{VENDING}/cabinets/{theirs_cabinet}/planogram",
        f"{VENDING}/cabinets/{theirs_cabinet}/planograms",
    ]
    for url in hidden:
        assert (await client.get(url, headers=driver)).status_code == 404, url

    writes = [
        ("POST", f"{VENDING}/machines", {"device_id": await new_device(client, tenant)}),
        ("PATCH", f"{VENDING}/machines/{mine['device_id']}", {"location": "x"}),
        ("DELETE", f"{VENDING}/machines/{mine['device_id']}", None),
        ("POST", f"{VENDING}/machines/{mine['device_id']}/cabinets", {"name": "x"}),
        ("PATCH", f"{VENDING}/cabinets/{mine_cabinet}", {"name": "x"}),
        ("DELETE", f"{VENDING}/cabinets/{mine_cabinet}", None),
        ("PUT", f"{VENDING}/cabinets/{mine_cabinet}/planogram", {"slots": [slot]}),
        ("GET", f"{VENDING}/cabinets/{mine_cabinet}/suggestion", None),
        ("POST", f"{VENDING}/cabinets/{mine_cabinet}/suggestion/apply", {"based_on_version": 1}),
    ]
    for method, url, body in writes:
        response = await client.request(method, url, headers=driver, json=body)
        assert response.status_code == 403, f"{method} {url}: {response.text}"
    still = await client.get(f"{VENDING}/machines/{mine['device_id']}", headers=driver)
    assert still.json()["location"] == ""


async def test_money_keeps_four_decimals(client: httpx.AsyncClient, tenant: Tenant) -> None:
    product = await new_product(client, tenant, unit_cost="0.1234", default_price="2")
    assert Decimal(product["unit_cost"]) == Decimal("0.1234")
    assert Decimal(product["default_price"]) == Decimal(2)
