"""Usage metering: counters from each transport, flush exactness, the API and CSV, roll-ups."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select
from websockets.asyncio.client import connect

from fleetcore import migrate
from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.usage import rollup
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter
from fleetcore.usage.models import UsageDaily, UsageDeviceDay, UsageMonthly
from tests.conftest import client_for, make_settings, running_app
from tests.support.devices import new_device, port_of
from tests.support.mqtt_raw import RawClient
from tests.support.serving import serving
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


def meter_of(app: FastAPI) -> UsageMeter:
    meter: UsageMeter = app.state.usage_meter
    return meter


async def usage(
    http: httpx.AsyncClient, org: Tenant, expect: int = 200, **params: str
) -> dict[str, object]:
    response = await http.get("/api/v1/usage", headers=org.headers(Role.ADMIN), params=params)
    assert response.status_code == expect, response.text
    body: dict[str, object] = response.json()
    return body


def cell(body: dict[str, object], kind: str, transport: str | None = None) -> int:
    rows = body["rows"]
    assert isinstance(rows, list)
    return sum(
        r["n"]
        for r in rows
        if r["kind"] == kind and (transport is None or r["transport"] == transport)
    )


async def test_http_ingest_and_api_requests_are_metered(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    meter = meter_of(live_app)
    _, token = await new_device(live_client, live_tenant)
    for payload in ({"t": 1, "h": 2}, {"t": 3}):
        response = await live_client.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=payload
        )
        assert response.status_code == 200, response.text
    await meter.flush()
    body = await usage(live_client, live_tenant)
    assert cell(body, "readings", "http") == 3
    assert cell(body, "messages", "http") == 2
    assert cell(body, "devices_active") == 1
    # new_device (a manager's request); this GET is counted after the flush it reads.
    assert cell(body, "api_requests", "user") == 1
    assert meter.today(live_tenant.org_id, UsageKind.API_REQUESTS) == 2
    assert meter.today(live_tenant.org_id, UsageKind.READINGS) == 3
    assert meter.today(live_tenant.org_id, "messages") == 2


async def test_mqtt_ingest_and_commands_are_metered(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    meter = meter_of(mqtt_app)
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "meter-dev", username=token)
    for i in range(3):
        payload = orjson.dumps({"ts": 1_700_000_000_000 + i, "values": {"a": i, "b": i}})
        await client.publish(f"devices/{device_id}/telemetry", payload, qos=1)
    await wait_until(lambda: meter.today(org.org_id, UsageKind.READINGS) == 6)
    assert await client.subscribe(f"devices/{device_id}/commands") == [1]
    response = await http.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=org.headers(Role.OPERATOR),
        json={"method": "reboot", "params": {}},
    )
    assert response.status_code == 201, response.text
    await wait_until(lambda: meter.today(org.org_id, UsageKind.COMMANDS) == 1)
    await meter.flush()
    body = await usage(http, org)
    assert cell(body, "readings", "mqtt") == 6
    assert cell(body, "messages", "mqtt") == 3
    assert cell(body, "commands", "mqtt") == 1
    assert cell(body, "devices_active") == 1


async def test_websocket_minutes_are_metered_as_each_starts(
    live_database: Database, tmp_path: Path
) -> None:
    async with (
        running_app(live_database, tmp_path) as app,
        serving(app) as address,
        client_for(app) as http,
    ):
        org = await make_tenant(http, live_database)
        meter = meter_of(app)
        async with connect(f"ws://{address}/api/v1/ws?token={org.tokens[Role.VIEWER]}"):
            await wait_until(lambda: meter.today(org.org_id, UsageKind.WS_MINUTES) == 1)
        await meter.flush()
        assert cell(await usage(http, org), "ws_minutes") == 1


async def test_a_failed_flush_keeps_its_deltas_and_nothing_is_counted_twice(
    tmp_path: Path,
) -> None:
    # A real database whose tables are not there yet: every write fails until they are.
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        meter = UsageMeter(database)
        org = uuid.uuid4()
        meter.count(org, UsageKind.API_REQUESTS, 5, transport="user")
        with pytest.raises(Exception, match="no such table: usage_"):
            await meter.flush()
        assert meter.pending == 1  # merged back
        meter.count(org, UsageKind.API_REQUESTS, 2, transport="user")  # counted meanwhile
        assert meter.today(org, UsageKind.API_REQUESTS) == 7
        await migrate.upgrade(database)
        await meter.flush()
        await meter.flush()  # nothing left: adds nothing
        meter.count(org, UsageKind.API_REQUESTS, 1, transport="user")
        await meter.flush()
        # A second process (another meter) adds to the same row.
        other = UsageMeter(database)
        other.count(org, UsageKind.API_REQUESTS, 10, transport="user")
        await other.flush()
        async with database.session() as session:
            stored = await session.scalar(
                select(func.sum(UsageDaily.n)).where(UsageDaily.organization_id == org)
            )
        assert stored == 18
        await meter.flush()  # refreshes today's totals from the database: both processes
        assert meter.today(org, UsageKind.API_REQUESTS) == 18
    finally:
        await database.close()


@pytest.fixture
async def admin(live_client: httpx.AsyncClient, live_tenant: Tenant) -> Tenant:
    return live_tenant


async def test_bad_periods_are_422_with_the_envelope(
    live_client: httpx.AsyncClient, admin: Tenant
) -> None:
    for params in (
        {"from": "2024-02-10", "to": "2024-02-01"},
        {"from": "yesterday"},
        {"granularity": "week"},
        {"from": "2000-01-01", "to": "2024-01-01"},
    ):
        response = await live_client.get(
            "/api/v1/usage", headers=admin.headers(Role.ADMIN), params=params
        )
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"], response.text


async def test_only_admins_read_usage_and_only_their_own(
    live_client: httpx.AsyncClient, live_database: Database, admin: Tenant
) -> None:
    other = await make_tenant(live_client, live_database)
    viewer = await live_client.get("/api/v1/usage", headers=admin.headers(Role.VIEWER))
    assert viewer.status_code == 403
    response = await live_client.get(
        "/api/v1/usage",
        headers=admin.headers(Role.ADMIN),
        params={"organization_id": str(other.org_id)},
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "NOT_SUPERUSER"


async def _seed_old_month(database: Database, org: uuid.UUID, month: date) -> None:
    rows = []
    for day in range(1, 29):
        d = month.replace(day=day)
        rows.append(dict(organization_id=org, day=d, kind="readings", transport="mqtt", n=day))
        rows.append(dict(organization_id=org, day=d, kind="storage_rows", transport="", n=day * 10))
    devices = [uuid.uuid4() for _ in range(3)]
    async with database.session(write=True) as session:
        await session.execute(insert(UsageDaily), rows)
        await session.execute(
            insert(UsageDeviceDay),
            [
                dict(organization_id=org, day=month.replace(day=day), device_id=device)
                for day in (1, 2, 15)
                for device in devices[: day % 3 + 1]
            ],
        )
        await session.commit()


async def test_rollup_to_months_answers_the_same(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_database: Database, admin: Tenant
) -> None:
    now = datetime.now(UTC)
    old = (now.date() - timedelta(days=500)).replace(day=1)
    await _seed_old_month(live_database, admin.org_id, old)
    params = {"from": old.isoformat(), "to": old.isoformat(), "granularity": "month"}
    before = await usage(live_client, admin, **params)
    assert cell(before, "readings") == sum(range(1, 29))
    assert cell(before, "storage_rows") == 280  # a level: the month's largest day
    assert cell(before, "devices_active") == 3  # distinct over the month
    settings = make_settings(Path("."), usage_daily_retention_days=400)
    assert await rollup.roll_up(live_database, settings, now=now) == 1
    after = await usage(live_client, admin, **params)
    assert after["rows"] == before["rows"]
    async with live_database.session() as session:
        daily = await session.scalar(
            select(func.count()).where(UsageDaily.organization_id == admin.org_id)
        )
        monthly = await session.scalar(
            select(func.count()).where(UsageMonthly.organization_id == admin.org_id)
        )
        device_days = await session.scalar(
            select(func.count()).where(UsageDeviceDay.organization_id == admin.org_id)
        )
    assert (daily, device_days) == (0, 0)
    assert monthly == 3  # readings/mqtt, storage_rows, devices_active
    assert await rollup.roll_up(live_database, settings, now=now) == 0  # nothing left


async def test_csv_export_is_safe_for_spreadsheets(
    live_app: FastAPI, live_client: httpx.AsyncClient, admin: Tenant
) -> None:
    meter = meter_of(live_app)
    meter.count(admin.org_id, UsageKind.MESSAGES, 4, transport="=HYPERLINK(1)")
    await meter.flush()
    response = await live_client.get(
        "/api/v1/usage.csv", headers=admin.headers(Role.ADMIN), params={"granularity": "day"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == ["organization_id", "granularity", "period", "kind", "transport", "n"]
    messages = [line for line in lines[1:] if line[3] == "messages"]
    assert messages == [
        [
            str(admin.org_id),
            "day",
            datetime.now(UTC).date().isoformat(),
            "messages",
            "'=HYPERLINK(1)",
            "4",
        ]
    ]
    same = await live_client.get(
        "/api/v1/usage", headers=admin.headers(Role.ADMIN), params={"format": "csv"}
    )
    assert same.text == response.text


async def test_usage_rows_by_day_from_both_processes(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_database: Database, admin: Tenant
) -> None:
    second = UsageMeter(live_database)
    meter_of(live_app).count(admin.org_id, UsageKind.NOTIFICATIONS, 2, transport="webhook")
    second.count(admin.org_id, UsageKind.NOTIFICATIONS, 3, transport="webhook")
    await second.flush()
    await meter_of(live_app).flush()
    assert cell(await usage(live_client, admin), "notifications", "webhook") == 5


async def test_the_usage_page_shows_a_chart_per_kind_and_the_csv_link(
    live_app: FastAPI, admin: Tenant
) -> None:
    meter = meter_of(live_app)
    meter.count(admin.org_id, UsageKind.READINGS, 42, transport="mqtt")
    await meter.flush()
    async with client_for(live_app) as http:
        http.cookies.set(SESSION_COOKIE, admin.tokens[Role.ADMIN])
        page = await http.get("/usage", params={"granularity": "month"})
        assert page.status_code == 200, page.text[:300]
        assert 'href="/usage"' in page.text  # in the admins' navigation
        assert 'data-kind="readings"' in page.text
        assert "/api/v1/usage.csv?" in page.text
        assert "<span data-total>42</span>" in page.text
        http.cookies.set(SESSION_COOKIE, admin.tokens[Role.VIEWER])
        viewer = await http.get("/usage")
        assert viewer.status_code == 403
        assert 'href="/usage"' not in viewer.text
