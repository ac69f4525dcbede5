"""Vending routes: managers write them (unique names, machines in visit order, drivers);
a driver reads only the routes assigned to them."""

from __future__ import annotations

import uuid

import httpx

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.devices import new_device
from tests.support.tenants import Tenant
from tests.support.vending_service import (
    Slot,
    audit_of,
    make_order,
    make_route,
    vending_machine,
)

ROUTES = "/api/v1/vending/routes"


async def test_a_manager_creates_renames_and_deletes_a_route(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    manager = tenant.headers(Role.MANAGER)
    created = await client.post(
        ROUTES, headers=manager, json={"name": " North ", "description": "d"}
    )
    assert created.status_code == 201, created.text
    route = created.json()
    assert (route["name"], route["description"], route["machines"], route["driver_ids"]) == (
        "North",
        "d",
        [],
        [],
    )
    again = await client.post(ROUTES, headers=manager, json={"name": "North"})
    assert (again.status_code, again.json()["error"]["code"]) == (409, "ROUTE_NAME_TAKEN")
    await client.post(ROUTES, headers=manager, json={"name": "South"})
    clash = await client.patch(f"{ROUTES}/{route['id']}", headers=manager, json={"name": "South"})
    assert (clash.status_code, clash.json()["error"]["code"]) == (409, "ROUTE_NAME_TAKEN")
    renamed = await client.patch(f"{ROUTES}/{route['id']}", headers=manager, json={"name": "East"})
    assert renamed.json()["name"] == "East"
    listed = await client.get(ROUTES, headers=tenant.headers(Role.VIEWER), params={"limit": 1})
    assert [r["name"] for r in listed.json()["items"]] == ["East"]
    rest = await client.get(
        ROUTES, headers=manager, params={"cursor": listed.json()["next_cursor"]}
    )
    assert [r["name"] for r in rest.json()["items"]] == ["South"]
    for role in (Role.VIEWER, Role.OPERATOR, Role.DRIVER):
        refused = await client.post(ROUTES, headers=tenant.headers(role), json={"name": "X"})
        assert refused.status_code == 403, role
    deleted = await client.delete(f"{ROUTES}/{route['id']}", headers=manager)
    assert deleted.status_code == 204
    gone = await client.get(f"{ROUTES}/{route['id']}", headers=manager)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "ROUTE_NOT_FOUND")
    actions = [e["action"] for e in await audit_of(client, tenant, route["id"])]
    assert actions == ["vending_route.create", "vending_route.update", "vending_route.delete"]


async def test_machines_are_kept_in_visit_order_and_move_between_routes(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    first = await vending_machine(client, db, tenant, [Slot("A1")], name="b-machine")
    second = await vending_machine(client, db, tenant, [Slot("A1")], name="a-machine")
    north = await make_route(client, tenant, device_ids=[first.device_id, second.device_id])
    route = (await client.get(f"{ROUTES}/{north}", headers=tenant.headers(Role.VIEWER))).json()
    assert [(m["device_id"], m["position"]) for m in route["machines"]] == [
        (first.device_id, 0),
        (second.device_id, 1),
    ]
    south = await make_route(client, tenant, device_ids=[second.device_id])
    moved = (await client.get(f"{ROUTES}/{north}", headers=tenant.headers(Role.VIEWER))).json()
    assert [m["device_id"] for m in moved["machines"]] == [first.device_id]
    south_route = await client.get(f"{ROUTES}/{south}", headers=tenant.headers(Role.VIEWER))
    assert [m["device_id"] for m in south_route.json()["machines"]] == [second.device_id]
    cleared = await client.put(
        f"{ROUTES}/{north}/machines", headers=tenant.headers(Role.MANAGER), json={"device_ids": []}
    )
    assert cleared.json()["machines"] == []


async def test_only_the_organizations_vending_machines_join_a_route(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    route_id = await make_route(client, tenant)
    theirs = await vending_machine(client, db, other_tenant, [Slot("A1")])
    plain_device, _ = await new_device(client, tenant)  # a device, not a vending machine
    url = f"{ROUTES}/{route_id}/machines"
    for device_id in (theirs.device_id, plain_device, str(uuid.uuid4())):
        refused = await client.put(
            url, headers=tenant.headers(Role.MANAGER), json={"device_ids": [device_id]}
        )
        assert refused.status_code == 404, refused.text
        error = refused.json()["error"]
        # The same answer for another organization's machine as for none at all.
        assert (error["code"], error["details"]) == (
            "MACHINE_NOT_FOUND",
            {"field": "device_ids", "device_ids": [device_id]},
        )
    their_route = await client.put(
        f"{ROUTES}/{route_id}/machines",
        headers=other_tenant.headers(Role.MANAGER),
        json={"device_ids": [theirs.device_id]},
    )
    assert their_route.status_code == 404
    # Not the driver's route: not there for them, whatever the method.
    driver = await client.put(url, headers=tenant.headers(Role.DRIVER), json={"device_ids": []})
    assert driver.status_code == 404
    assert (
        await client.put(url, headers=tenant.headers(Role.VIEWER), json={"device_ids": []})
    ).status_code == 403


async def test_drivers_are_users_with_the_driver_role_and_see_only_their_routes(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    machine = await vending_machine(client, db, tenant, [Slot("A1")])
    driver = tenant.user_ids[Role.DRIVER]
    mine = await make_route(client, tenant, device_ids=[machine.device_id], driver_ids=[driver])
    other = await make_route(client, tenant)
    url = f"{ROUTES}/{other}/drivers"
    for user_id in (
        tenant.user_ids[Role.VIEWER],
        other_tenant.user_ids[Role.DRIVER],
        uuid.uuid4(),
    ):
        refused = await client.put(
            url, headers=tenant.headers(Role.MANAGER), json={"user_ids": [str(user_id)]}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "NOT_A_DRIVER"
        assert refused.json()["error"]["details"]["user_ids"] == [str(user_id)]

    as_driver = tenant.headers(Role.DRIVER)
    listed = await client.get(ROUTES, headers=as_driver)
    assert listed.status_code == 200
    assert [r["id"] for r in listed.json()["items"]] == [mine]
    route = (await client.get(f"{ROUTES}/{mine}", headers=as_driver)).json()
    assert route["driver_ids"] == [str(driver)]
    assert [m["device_id"] for m in route["machines"]] == [machine.device_id]
    hidden = await client.get(f"{ROUTES}/{other}", headers=as_driver)
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "ROUTE_NOT_FOUND")
    for method, path, body in (
        ("PATCH", f"{ROUTES}/{mine}", {"name": "mine now"}),
        ("PUT", f"{ROUTES}/{mine}/drivers", {"user_ids": []}),
        ("DELETE", f"{ROUTES}/{mine}", None),
    ):
        refused = await client.request(method, path, headers=as_driver, json=body)
        assert refused.status_code == 403, (method, path)

    unassigned = await client.put(
        f"{ROUTES}/{mine}/drivers", headers=tenant.headers(Role.MANAGER), json={"user_ids": []}
    )
    assert unassigned.json()["driver_ids"] == []
    assert (await client.get(ROUTES, headers=as_driver)).json()["items"] == []
    actions = [e["action"] for e in await audit_of(client, tenant, mine)]
    assert actions == [
        "vending_route.create",
        "vending_route.machines",
        "vending_route.drivers",
        "vending_route.drivers",
    ]


async def test_a_route_with_service_orders_is_kept(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    machine = await vending_machine(client, db, tenant, [Slot("A1", fill_level=0)])
    route_id = await make_route(client, tenant, device_ids=[machine.device_id])
    await make_order(client, tenant, route_id)
    refused = await client.delete(f"{ROUTES}/{route_id}", headers=tenant.headers(Role.MANAGER))
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "ROUTE_HAS_ORDERS")
