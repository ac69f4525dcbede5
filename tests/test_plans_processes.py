"""Plans across requests and processes, on the live database (both backends): concurrent
creations never pass a plan's limit, and a plan changed through one process applies in
another one (each `serve` of role all) within its refresh."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.tenants import PASSWORD, Tenant, make_superuser
from tests.support.wait import wait_until
from tests.test_plans import put_on_plan


async def test_concurrent_creations_stop_at_the_plan_limit(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    client, tenant = live_client, live_tenant
    superuser = await make_superuser(client, live_database)
    await put_on_plan(client, superuser, tenant, max_devices=3)
    await new_device(client, tenant)  # one in use: two places left

    async def create(n: int) -> httpx.Response:
        return await client.post(
            "/api/v1/devices",
            headers=tenant.headers(Role.MANAGER),
            json={"name": f"race-{n}", "serial_number": f"RACE-{n}"},
        )

    answers = await asyncio.gather(*(create(n) for n in range(8)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201, 201] + [403] * 6, [a.text for a in answers]
    refused = {a.json()["error"]["code"] for a in answers if a.status_code == 403}
    assert refused == {"PLAN_LIMIT"}
    mine = await client.get("/api/v1/organizations/me/plan", headers=tenant.headers())
    assert {u["limit"]: u["used"] for u in mine.json()["usage"]}["devices"] == 3


async def test_concurrent_user_creations_stop_at_the_plan_limit(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    client, tenant = live_client, live_tenant
    superuser = await make_superuser(client, live_database)
    body = await put_on_plan(client, superuser, tenant, max_users=100)
    in_use = {u["limit"]: u["used"] for u in body["usage"]}["users"]
    await put_on_plan(client, superuser, tenant, max_users=in_use + 1)

    async def create(n: int) -> httpx.Response:
        return await client.post(
            "/api/v1/users",
            headers=tenant.headers(),
            json={
                "email": f"race-{n}-{uuid.uuid4().hex[:6]}@example.com",
                "password": PASSWORD,
                "role": "viewer",
            },
        )

    answers = await asyncio.gather(*(create(n) for n in range(6)))
    assert sorted(a.status_code for a in answers) == [201] + [403] * 5, [a.text for a in answers]


async def _post(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json={"t": 1}
    )


async def test_a_plan_assigned_through_one_process_applies_in_another(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    tmp_path: Path,
) -> None:
    client, tenant = live_client, live_tenant
    superuser = await make_superuser(client, live_database)
    _, token = await new_device(client, tenant)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    # A second `serve` (role all) on the same database: it never hears of the change in
    # process; only its refresh (the change counter, every few seconds) can tell it.
    async with running_app(live_database, other_dir) as other_app, client_for(other_app) as other:
        assert "plans.refresh" in other_app.state.jobs.names
        burst = [await _post(other, token) for _ in range(3)]
        assert [r.status_code for r in burst] == [200, 200, 200]  # no plan yet

        await put_on_plan(client, superuser, tenant, max_messages_per_second=1)
        refused: list[dict[str, Any]] = []

        async def refused_there() -> bool:
            answer = await _post(other, token)
            if answer.status_code == 429:
                refused.append(answer.json()["error"])
            return bool(refused)

        await wait_until(refused_there, within=15, every=0.2)
        assert refused[0]["details"]["limit"] == "messages_per_second"

        # Back on the default through the first process: the other stops refusing.
        back = await client.put(
            f"/api/v1/organizations/{tenant.org_id}/plan", headers=superuser, json={"plan_id": None}
        )
        assert back.status_code == 200, back.text

        async def unlimited_there() -> bool:
            return [(await _post(other, token)).status_code for _ in range(3)] == [200] * 3

        await wait_until(unlimited_there, within=15, every=0.2)
