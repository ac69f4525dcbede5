"""One open rollout per device and kind, held by the database: two rollouts created at the
same moment for one device (PostgreSQL, both past the busy check) give one 201 and one 409;
a rollout that ends frees its devices (both databases)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.postgres import PG_ONLY
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


@pytest.fixture
async def ota_app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async with running_app(live_database, tmp_path, ota_job_interval_s=0.2) as application:
        yield application


@pytest.fixture
async def http(ota_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ota_app) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def _package(http: httpx.AsyncClient, org: Tenant, version: str) -> str:
    response = await http.post(
        "/api/v1/ota/packages",
        headers=org.headers(Role.MANAGER),
        data={"title": "race-fw", "version": version, "kind": "firmware"},
        files={"file": ("fw.bin", os.urandom(1000), "application/octet-stream")},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _create(http: httpx.AsyncClient, org: Tenant, package_id: str, device_id: str) -> Any:
    return await http.post(
        "/api/v1/ota/rollouts",
        headers=org.headers(Role.MANAGER),
        json={"package_id": package_id, "target": {"device_ids": [device_id]}},
    )


async def _waiting_on(database: Database, table: str, count: int) -> bool:
    async with database.session() as session:
        waiting = await session.execute(
            text(
                "SELECT count(DISTINCT pid) FROM pg_locks "
                "WHERE NOT granted AND relation = CAST(:table AS regclass)"
            ),
            {"table": table},
        )
        return int(waiting.scalar_one()) >= count


@PG_ONLY
async def test_two_rollouts_created_at_once_for_one_device_one_wins(
    http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    first, second = await _package(http, org, "1.0"), await _package(http, org, "2.0")
    device_id, _ = await new_device(http, org)
    # Both requests pass the busy check (reads go on), then wait to insert their rollout
    # until the lock goes: the window in which the check alone let both through.
    async with live_database.engine.connect() as lock:
        await lock.exec_driver_sql("LOCK TABLE ota_rollouts IN SHARE ROW EXCLUSIVE MODE")
        racing = [
            asyncio.create_task(_create(http, org, package, device_id))
            for package in (first, second)
        ]
        await wait_until(lambda: _waiting_on(live_database, "ota_rollouts", 2), within=15)
        await lock.rollback()
    answers = await asyncio.gather(*racing)
    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["error"]["code"] == "OTA_DEVICE_BUSY"
    listed = await http.get("/api/v1/ota/rollouts", headers=org.headers())
    assert [item["devices"] for item in listed.json()["items"]] == [1]


async def test_a_device_joins_another_rollout_once_the_last_one_ended(
    http: httpx.AsyncClient, org: Tenant
) -> None:
    packages = [await _package(http, org, version) for version in ("1.0", "2.0", "3.0")]
    device_id, token = await new_device(http, org)
    started = await _create(http, org, packages[0], device_id)
    assert started.status_code == 201, started.text
    busy = await _create(http, org, packages[1], device_id)
    assert busy.status_code == 409
    assert busy.json()["error"]["details"]["device_ids"] == [device_id]

    aborted = await http.post(
        f"/api/v1/ota/rollouts/{started.json()['id']}/abort", headers=org.headers(Role.MANAGER)
    )
    assert aborted.status_code == 200, aborted.text
    again = await _create(http, org, packages[1], device_id)
    assert again.status_code == 201, again.text

    # The device reports the update done: the job completes the rollout and frees it.
    body = {"current_fw_title": "race-fw", "current_fw_version": "2.0", "fw_state": "UPDATED"}
    reported = await http.post(
        "/api/v1/devices/me/attributes", headers={"X-Device-Token": token}, json=body
    )
    assert reported.status_code == 200, reported.text

    async def completed() -> bool:
        got = await http.get(f"/api/v1/ota/rollouts/{again.json()['id']}", headers=org.headers())
        return bool(got.json()["status"] == "completed")

    await wait_until(completed, within=15)
    third = await _create(http, org, packages[2], device_id)
    assert third.status_code == 201, third.text
