"""Tenant isolation sweep: every route that takes an id, called by another organization, is 404.

Walks the OpenAPI schema, so a route added later is swept too; a route whose path parameter
the sweep does not know fails here until tests/support/sweep.py creates such an object.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from tests.support.sweep import NON_ID_PARAMS, create_objects, minimal_body
from tests.support.tenants import Tenant

# Routes exempt from the sweep, and why.
EXEMPT: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/{token}/telemetry"): "device route: the token is the credential, not an id",
    ("GET", "/api/v1/{token}/rpc"): "device route: the token is the credential, not an id",
    ("POST", "/api/v1/{token}/rpc/{request_id}"): "device route: the token is the credential",
    ("GET", "/api/v1/{token}/attributes/updates"): "device route: the token is the credential",
    ("GET", "/api/v1/devices/me/ota/{kind}"): (
        "device route (device token); another device's package is 404: test_ota.py"
    ),
    ("GET", "/api/v1/{token}/firmware"): "device route: the token is the credential (test_ota.py)",
    ("GET", "/api/v1/{token}/software"): "device route: the token is the credential (test_ota.py)",
    ("POST", "/api/v1/devices/me/commands/{command_id}/result"): (
        "device route (device token); another device's command is 404: test_commands.py"
    ),
    ("PUT", "/api/v1/media/uploads/{token}"): (
        "upload URL: the signed token is the credential (refusals: test_media.py)"
    ),
    ("GET", "/api/v1/media/signed/{token}"): (
        "signed link: the token is the credential (refusals: test_media.py)"
    ),
    **{
        (method, "/api/v1/plans/{plan_id}"): (
            "a platform object of no organization (superusers only): every organization's "
            "caller gets the same 403 whether the id exists or not (test_plans.py)"
        )
        for method in ("GET", "PUT", "DELETE")
    },
}


async def test_every_id_route_is_404_for_another_organization(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = await create_objects(app, client, tenant)
    spec = (await client.get("/api/openapi.json")).json()
    intruder = other_tenant.headers(Role.ADMIN)
    swept: list[str] = []
    failures: list[str] = []
    for path, operations in spec["paths"].items():
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if not params:
            continue
        for method, operation in operations.items():
            if (method.upper(), path) in EXEMPT:
                continue
            unknown = [p for p in params if p not in ids and p not in NON_ID_PARAMS]
            if unknown:
                failures.append(f"{method.upper()} {path}: the sweep has no object for {unknown}")
                continue
            url = path
            for param in params:
                value = ids.get(param) or NON_ID_PARAMS[param]
                url = url.replace("{" + param + "}", value)
            kwargs: dict[str, Any] = {"headers": intruder}
            body = minimal_body(spec, operation)
            if body is not None:
                kwargs[body[0]] = body[1]
            response = await client.request(method.upper(), url, **kwargs)
            swept.append(f"{method.upper()} {path}")
            if response.status_code != 404:
                failures.append(
                    f"{method.upper()} {path}: {response.status_code} {response.text[:200]}"
                )
    assert not failures, "\n".join(failures)
    assert len(swept) >= 10, swept


async def test_lists_never_show_another_organizations_objects(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = await create_objects(app, client, tenant)
    # Small integer ids would match any text; those records also carry a uuid checked here.
    ids = {name: value for name, value in ids.items() if not value.isdigit()}
    spec = (await client.get("/api/openapi.json")).json()
    intruder = other_tenant.headers(Role.ADMIN)
    checked = 0
    for path, operations in spec["paths"].items():
        if "{" in path or "get" not in operations or not path.startswith("/api/v1/"):
            continue
        response = await client.get(path, headers=intruder)
        if response.status_code != 200:
            continue
        checked += 1
        for name, value in ids.items():
            assert value not in response.text, f"GET {path} shows organization A's {name}"
    assert checked >= 5
