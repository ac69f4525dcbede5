"""A route driver's scope, swept over the OpenAPI schema like the tenant isolation sweep.

Every vending route (and a device's DEX upload) called with ids of objects of the driver's
organization that lie OUTSIDE the driver's routes answers 404 (or, for a route that refuses
drivers outright, the same 403 it gives an id that exists nowhere); every other API route
answers 403; the live socket is refused and dashboard pages send the driver to their
routes. A vending route whose path parameter the sweep has no object for fails here until
`_outside_objects` makes one. The driver's own work on their own order succeeds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select
from websockets.asyncio.client import connect

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.routers import PAGE_ROUTERS
from fleetcore.vending.models import Audit, Planogram
from tests.conftest import client_for, running_app
from tests.support.serving import serving
from tests.support.sweep import NON_ID_PARAMS, create_objects, example, minimal_body
from tests.support.tenants import Tenant, make_tenant
from tests.support.vending_service import Slot, make_order, make_route, move, vending_machine

VENDING = "/api/v1/vending/"
# Paths outside /api/v1/vending that act on a vending machine and so reach drivers.
VENDING_DEVICE_PATHS = ("/api/v1/devices/{device_id}/dex",)
# What a driver reads but never changes: objects not tied to a route.
READ_ONLY_PARAMS = {"product_id"}
# Non-vending routes a driver may call, and why.
DRIVER_ALLOWED = {
    "/api/v1/auth/login": "signing in",
    "/api/v1/auth/refresh": "keeping the session",
    "/api/v1/auth/logout": "signing out",
    "/api/v1/auth/me": "their own account",
    "/api/v1/auth/change-password": "their own password",
    "/api/v1/provision": "device route: the profile's provision key, no user",
    # Accounts: no sign-in at all, the emailed link or the address is the key (anyone's).
    "/api/v1/auth/register": "sign-up, no user",
    "/api/v1/auth/verify": "an emailed link, no user",
    "/api/v1/auth/password-reset": "asking for a reset link, no user",
    "/api/v1/auth/password-reset/confirm": "an emailed link, no user",
    "/api/v1/invitations/accept": "an emailed link, no user",
}


def _is_device_route(path: str) -> bool:
    """Routes a device calls with its token: no user principal at all."""
    return (
        "{token}" in path or path == "/api/v1/devices/me" or path.startswith("/api/v1/devices/me/")
    )


def _is_broker_route(path: str) -> bool:
    """Routes an MQTT broker calls with the broker secret: a user's credentials are no key."""
    return path.startswith("/api/v1/broker/")


def _is_vending(path: str) -> bool:
    return path.startswith(VENDING) or path.startswith(VENDING_DEVICE_PATHS)


def _code(response: httpx.Response) -> str | None:
    body = response.json()
    return body["error"]["code"] if isinstance(body, dict) and "error" in body else None


def _url(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


def _request(
    spec: dict[str, Any], operation: dict[str, Any], headers: dict[str, str]
) -> dict[str, Any]:
    """Headers, the minimal body and required query parameters of an operation."""
    kwargs: dict[str, Any] = {"headers": headers}
    body = minimal_body(spec, operation)
    if body is not None:
        kwargs[body[0]] = body[1]
    query = {
        p["name"]: example(spec, p.get("schema", {}))
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and p.get("required")
    }
    if query:
        kwargs["params"] = query
    return kwargs


async def _scene(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> tuple[dict[str, str], dict[str, str]]:
    """The driver's route with an issued order, and objects of the same organization
    outside it (another route, its machine, order, line, cabinet, planogram, audit)."""
    driver = tenant.user_ids[Role.DRIVER]
    own = await vending_machine(client, db, tenant, [Slot("A1", fill_level=2)], name="own")
    own_route = await make_route(client, tenant, device_ids=[own.device_id], driver_ids=[driver])
    own_order = await make_order(client, tenant, own_route, driver_id=str(driver))
    await move(client, tenant, own_order["id"], "issue")

    outside = await vending_machine(client, db, tenant, [Slot("B1", fill_level=1)], name="outside")
    outside_route = await make_route(client, tenant, device_ids=[outside.device_id])
    outside_order = await make_order(client, tenant, outside_route)
    await move(client, tenant, outside_order["id"], "issue")
    line = outside_order["stops"][0]["cabinets"][0]["lines"][0]
    async with db.session(write=True) as session:
        planogram = await session.scalar(
            select(Planogram).where(Planogram.cabinet_id == outside.cabinet_id)
        )
        audit = Audit(
            organization_id=tenant.org_id,
            device_id=uuid.UUID(outside.device_id),
            content_hash="0" * 64,
            source="upload",
            read_at=utcnow(),
            status="accepted",
            raw=b"DXS*sweep",
        )
        session.add(audit)
        await session.commit()
    assert planogram is not None
    outside_ids = {
        "route_id": outside_route,
        "order_id": outside_order["id"],
        "line_id": str(line["id"]),
        "device_id": outside.device_id,
        "cabinet_id": str(outside.cabinet_id),
        "planogram_id": str(planogram.id),
        "audit_id": str(audit.id),
        "product_id": str(outside.products["B1"]),
    }
    own_ids = {
        "route_id": own_route,
        "order_id": own_order["id"],
        "line_id": str(own_order["stops"][0]["cabinets"][0]["lines"][0]["id"]),
        "device_id": own.device_id,
    }
    return outside_ids, own_ids


async def test_every_vending_route_outside_the_drivers_routes_is_404(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    outside, _ = await _scene(client, db, tenant)
    spec = (await client.get("/api/openapi.json")).json()
    driver = tenant.headers(Role.DRIVER)
    hidden = [v for k, v in outside.items() if k not in READ_ONLY_PARAMS and not v.isdigit()]
    swept: list[str] = []
    scoped: list[str] = []  # 404: the route lets drivers in and hides what is not theirs
    refused_outright: list[str] = []  # 403 whatever the id: drivers never reach the route
    failures: list[str] = []
    for path, operations in spec["paths"].items():
        if not _is_vending(path):
            continue
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        unknown = [p for p in params if p not in outside and p not in NON_ID_PARAMS]
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            if unknown:
                failures.append(f"{label}: the sweep has no object for {unknown}")
                continue
            url = _url(_url(path, outside), NON_ID_PARAMS)
            answer = await client.request(method.upper(), url, **_request(spec, operation, driver))
            swept.append(label)
            if params and set(params) <= READ_ONLY_PARAMS:
                expected = {200} if method == "get" else {403}
            elif params:
                expected = {404}
            else:  # lists answer the driver's part only (or refuse); creating is refused
                expected = {200, 403} if method == "get" else {403}
            if answer.status_code == 403 and expected == {404}:
                # A route that refuses drivers outright (PrincipalDep, deny by default) answers
                # the same 403 for an id that exists nowhere: no hint of what is there.
                nowhere = {
                    p: "999999999" if outside[p].isdigit() else str(uuid.uuid4()) for p in params
                }
                probe = await client.request(
                    method.upper(),
                    _url(_url(path, nowhere), NON_ID_PARAMS),
                    **_request(spec, operation, driver),
                )
                if (probe.status_code, _code(probe)) == (403, _code(answer)):
                    refused_outright.append(label)
                    continue
            if answer.status_code not in expected:
                failures.append(f"{label}: {answer.status_code} {answer.text[:200]}")
            elif answer.status_code == 404:
                scoped.append(label)
            elif answer.status_code == 200 and not params:
                leaked = [v for v in hidden if v in answer.text]
                if leaked:
                    failures.append(f"{label} shows objects outside the driver's routes: {leaked}")
    assert not failures, "\n".join(failures)
    # This part's routes let drivers in and scope them; other parts' join as they land.
    for route in (
        "GET /api/v1/vending/routes/{route_id}",
        "POST /api/v1/vending/routes/{route_id}/service-orders",
        "PUT /api/v1/vending/service-orders/{order_id}/lines/{line_id}",
        "PUT /api/v1/vending/service-orders/{order_id}/visits/{device_id}",
        "POST /api/v1/vending/service-orders/{order_id}/complete",
        "PATCH /api/v1/vending/routes/{route_id}",
    ):
        assert route in scoped, route


async def test_every_other_api_route_is_403_for_a_driver(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    ids = await create_objects(app, client, tenant)  # the driver's own organization's objects
    spec = (await client.get("/api/openapi.json")).json()
    driver = tenant.headers(Role.DRIVER)
    swept: list[str] = []
    failures: list[str] = []
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1/") or _is_vending(path) or _is_device_route(path):
            continue
        if path in DRIVER_ALLOWED:
            continue
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        unknown = [p for p in params if p not in ids and p not in NON_ID_PARAMS]
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            if unknown:
                failures.append(f"{label}: the sweep has no object for {unknown}")
                continue
            url = _url(_url(path, ids), NON_ID_PARAMS)
            answer = await client.request(method.upper(), url, **_request(spec, operation, driver))
            swept.append(label)
            # The broker's routes know no users: a driver's token is a wrong secret there.
            expected = 401 if _is_broker_route(path) else 403
            if answer.status_code != expected:
                failures.append(f"{label}: {answer.status_code} {answer.text[:200]}")
    assert not failures, "\n".join(failures)
    assert len(swept) >= 50, swept
    me = await client.get("/api/v1/auth/me", headers=driver)
    assert (me.status_code, me.json()["role"]) == (200, "driver")


async def test_the_driver_does_their_work_on_their_own_order(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    outside, own = await _scene(client, db, tenant)
    driver = tenant.headers(Role.DRIVER)
    routes = (await client.get("/api/v1/vending/routes", headers=driver)).json()["items"]
    assert [r["id"] for r in routes] == [own["route_id"]]
    orders = (await client.get("/api/v1/vending/service-orders", headers=driver)).json()["items"]
    assert [o["id"] for o in orders] == [own["order_id"]]
    hidden = await client.get(
        "/api/v1/vending/service-orders", headers=driver, params={"route_id": outside["route_id"]}
    )
    assert hidden.json()["items"] == []
    order_url = f"/api/v1/vending/service-orders/{own['order_id']}"
    detail = await client.get(order_url, headers=driver)
    assert (detail.status_code, detail.json()["state"]) == (200, "issued")
    started = await client.post(f"{order_url}/start", headers=driver)
    assert (started.status_code, started.json()["state"]) == (200, "in_progress")
    filled = await client.put(
        f"{order_url}/lines/{own['line_id']}", headers=driver, json={"filled": 6}
    )
    assert (filled.status_code, filled.json()["filled"]) == (200, 6)
    # A line of another order, through the driver's own order: not there.
    foreign_line = await client.put(
        f"{order_url}/lines/{outside['line_id']}", headers=driver, json={"filled": 1}
    )
    assert (foreign_line.status_code, foreign_line.json()["error"]["code"]) == (
        404,
        "PICK_LINE_NOT_FOUND",
    )
    cash = await client.put(
        f"{order_url}/visits/{own['device_id']}", headers=driver, json={"cash_collected": "42.50"}
    )
    assert (cash.status_code, cash.json()["cash_collected"]) == (200, "42.50")
    completed = await client.post(f"{order_url}/complete", headers=driver)
    assert (completed.status_code, completed.json()["state"]) == (200, "completed")
    refused = await client.post(f"{order_url}/cancel", headers=driver)
    assert refused.status_code == 403


async def test_a_driver_opening_any_other_page_is_sent_to_their_routes(
    app: FastAPI, tenant: Tenant
) -> None:
    pages = [
        route.path
        for router in PAGE_ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute)
        and "GET" in route.methods
        and not route.path.startswith(("/auth/", "/vending", "/service-orders"))
    ]
    assert "/dashboard" in pages
    async with client_for(app) as browser:
        browser.cookies.set(SESSION_COOKIE, tenant.tokens[Role.DRIVER])
        for path in pages:
            page = _url(path, {p: str(uuid.uuid4()) for p in ("device_id", "alert_id", "rule_id")})
            answer = await browser.get(page)
            redirect = answer.headers.get("location")
            if path == "/":  # the home page sends everyone to /dashboard, which sends drivers on
                assert (answer.status_code, redirect) == (303, "/dashboard")
                continue
            assert (answer.status_code, redirect) == (303, "/vending/routes"), path
        api = await browser.get("/api/v1/devices")
        assert api.status_code == 403


@pytest.fixture
async def served(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[str, Tenant]]:
    async with (
        running_app(live_database, tmp_path) as application,
        serving(application) as url,
        client_for(application) as http,
    ):
        yield url, await make_tenant(http, live_database)


async def test_a_drivers_live_socket_is_refused(served: tuple[str, Tenant]) -> None:
    host, org = served
    async with connect(f"ws://{host}/api/v1/ws?token={org.tokens[Role.VIEWER]}"):
        pass  # a viewer's socket opens
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(f"ws://{host}/api/v1/ws?token={org.tokens[Role.DRIVER]}"):
            pass
    cookie = f"{SESSION_COOKIE}={org.tokens[Role.DRIVER]}"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(
            f"ws://{host}/api/v1/ws", additional_headers={"Cookie": cookie}, origin=f"http://{host}"
        ):
            pass
