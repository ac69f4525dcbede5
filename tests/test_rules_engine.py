"""The rules engine on real ingest: every condition type end to end, duration, hysteresis,
scopes, late readings and restart survival, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, alerts_of, make_rule, send, settled, wait_for_alerts
from tests.support.tenants import Tenant

MIN = 60_000


async def test_threshold_opens_and_the_end_of_the_condition_clears(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    rule = await make_rule(
        live_client, live_tenant, device_id=device_id, condition=HOT, severity="critical"
    )
    await send(live_client, token, T0, t=25)
    await settled(live_app)
    assert await alerts_of(live_client, live_tenant) == []
    await send(live_client, token, T0 + 1000, t=31.5)
    [alert] = await wait_for_alerts(live_client, live_tenant, 1, status="active")
    assert alert["rule_id"] == rule["id"]
    assert alert["device_id"] == device_id
    assert alert["severity"] == "critical"
    assert alert["count"] == 1
    assert alert["details"]["values"] == {"t": 31.5}
    assert alert["opened_at"].startswith("2026-11-21T")  # the reading's time, not the clock's
    await send(live_client, token, T0 + 2000, t=29)
    [cleared] = await wait_for_alerts(live_client, live_tenant, 1, status="cleared")
    assert cleared["id"] == alert["id"]
    assert cleared["clear_reason"] == "condition"


async def test_a_batch_holding_duplicates_is_evaluated_on_its_new_readings(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """A batch with readings already stored takes the writer's other path (the stored
    readings picked out one by one): the engine sees the new ones all the same."""
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(live_client, live_tenant, device_id=device_id, condition=HOT)
    await send(live_client, token, T0, t=25)
    await settled(live_app)
    both = await live_client.post(
        "/api/v1/devices/me/telemetry",
        headers={"X-Device-Token": token},
        json=[{"ts": T0, "values": {"t": 25}}, {"ts": T0 + 1000, "values": {"t": 40}}],
    )
    assert both.status_code == 200, both.text
    assert both.json()["duplicates"] == 1
    [alert] = await wait_for_alerts(live_client, live_tenant, 1, status="active")
    assert alert["details"]["values"] == {"t": 40}


async def test_duration_hysteresis_and_repeats(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client,
        live_tenant,
        device_id=device_id,
        condition=HOT,
        duration_s=60,
        clear_condition={"key": "t", "op": "<", "value": 25},
    )
    await send(live_client, token, T0, t=31)
    await send(live_client, token, T0 + 59_000, t=31)
    await settled(live_app)
    assert await alerts_of(live_client, live_tenant) == []  # 59 s is not 60
    await send(live_client, token, T0 + 60_000, t=31)
    [alert] = await wait_for_alerts(live_client, live_tenant, 1, status="active")
    # dancing around 30 while above the clear level: the same alert, repeats counted
    for i, value in enumerate([29.5, 30.5, 30.5, 29.5, 30.5, 30.5, 29.5, 30.5]):
        await send(live_client, token, T0 + 61_000 + i * 60_000, t=value)
    await settled(live_app)
    [same] = await alerts_of(live_client, live_tenant)
    assert same["id"] == alert["id"]
    assert same["status"] == "active"
    # a return above 30 counts once it held 60 s again: twice; the last has not held yet
    assert same["count"] == 3
    await send(live_client, token, T0 + 10 * MIN, t=24)
    [cleared] = await wait_for_alerts(live_client, live_tenant, 1, status="cleared")
    assert cleared["count"] == 3
    assert cleared["details"]["cleared_values"] == {"t": 24}


async def test_outside_range_and_combinations_across_messages(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client,
        live_tenant,
        name="cold chain",
        device_id=device_id,
        condition={"type": "outside_range", "key": "t", "min": 2, "max": 8},
    )
    await make_rule(
        live_client,
        live_tenant,
        name="hot and humid",
        device_id=device_id,
        condition={
            "type": "all",
            "conditions": [
                {"key": "t", "op": ">", "value": 7},
                {"key": "h", "op": ">", "value": 80},
            ],
        },
    )
    await send(live_client, token, T0, t=7.5)
    await send(live_client, token, T0 + 1000, h=85)  # the combination sees t from before
    [combined] = await wait_for_alerts(live_client, live_tenant, 1)
    assert combined["name"] == "hot and humid"
    assert combined["details"]["values"] == {"h": 85, "t": 7.5}
    await send(live_client, token, T0 + 2000, t=1.5)
    found = await wait_for_alerts(live_client, live_tenant, 2)
    by_name = {a["name"]: a for a in found}
    assert by_name["cold chain"]["status"] == "active"
    assert by_name["hot and humid"]["status"] == "cleared"


async def test_rate_of_change_and_late_readings(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client,
        live_tenant,
        device_id=device_id,
        condition={"type": "rate_of_change", "key": "t", "window_s": 600, "op": ">", "value": 1},
    )
    await send(live_client, token, T0, t=20)
    await send(live_client, token, T0 + 5 * MIN, t=24)  # 0.8 per minute
    await settled(live_app)
    assert await alerts_of(live_client, live_tenant) == []
    # older than what was evaluated: stored, but it must not make a rate
    await send(live_client, token, T0 + 1 * MIN, t=40)
    await settled(live_app)
    assert await alerts_of(live_client, live_tenant) == []
    await send(live_client, token, T0 + 10 * MIN, t=32)  # 12 in 10 min
    [alert] = await wait_for_alerts(live_client, live_tenant, 1)
    assert alert["details"]["values"] == {"t": 32}


async def test_no_data_fires_on_the_timer_and_clears_when_data_comes(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client,
        live_tenant,
        device_id=device_id,
        # 30 s: longer than the test takes on a loaded machine, so the scheduled sweep (at the
        # clock's time) cannot fire it before the sweeps below, which are given their time.
        condition={"type": "no_data", "minutes": 0.5},
        severity="major",
    )
    now = int(time.time() * 1000)
    await send(live_client, token, now, t=1)
    await settled(live_app)
    engine = live_app.state.rules
    await engine.sweep(at=now + 29_000)  # the timer judges silence at a time given here
    assert await alerts_of(live_client, live_tenant) == []  # heard from it 29 s ago
    await engine.sweep(at=now + 31_000)
    [alert] = await wait_for_alerts(live_client, live_tenant, 1)
    # The scheduled job sweeps at the clock's time: still silent, still the one alert.
    await live_app.state.jobs.run_once("rules.no-data")
    assert [a["id"] for a in await alerts_of(live_client, live_tenant)] == [alert["id"]]
    assert alert["status"] == "active"
    assert alert["severity"] == "major"
    await send(live_client, token, int(time.time() * 1000), t=2)
    [cleared] = await wait_for_alerts(live_client, live_tenant, 1, status="cleared")
    assert cleared["id"] == alert["id"]


async def test_profile_and_asset_scopes(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    manager = live_tenant.headers(Role.MANAGER)
    profile = await live_client.post(
        "/api/v1/device-profiles", headers=manager, json={"name": "freezers"}
    )
    assert profile.status_code == 201, profile.text
    site = await live_client.post(
        "/api/v1/assets", headers=manager, json={"name": "site", "type": "site"}
    )
    line = await live_client.post(
        "/api/v1/assets",
        headers=manager,
        json={"name": "line", "type": "line", "parent_id": site.json()["id"]},
    )
    in_profile, profile_token = await new_device(
        live_client, live_tenant, profile_id=profile.json()["id"]
    )
    under_asset, asset_token = await new_device(live_client, live_tenant)
    attached = await live_client.put(
        f"/api/v1/assets/{line.json()['id']}/devices/{under_asset}", headers=manager
    )
    assert attached.status_code in (200, 204), attached.text
    elsewhere, other_token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client, live_tenant, name="profile", profile_id=profile.json()["id"], condition=HOT
    )
    await make_rule(
        live_client, live_tenant, name="site", asset_id=site.json()["id"], condition=HOT
    )
    for token in (profile_token, asset_token, other_token):
        await send(live_client, token, T0, t=40)
    found = await wait_for_alerts(live_client, live_tenant, 2)
    await settled(live_app)
    assert {(a["name"], a["device_id"]) for a in found} == {
        ("profile", in_profile),
        ("site", under_asset),
    }
    assert elsewhere not in {a["device_id"] for a in await alerts_of(live_client, live_tenant)}


async def test_state_survives_a_restart(live_database: Database, tmp_path: Path) -> None:
    """A pending duration continues after a restart; an open alert is not opened again."""
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        from tests.support.tenants import make_tenant

        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        await make_rule(http, org, device_id=device_id, condition=HOT, duration_s=60)
        await send(http, token, T0, t=31)
        await settled(app)
        assert await alerts_of(http, org) == []
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        await send(http, token, T0 + 60_000, t=32)  # 60 s after the pending one began
        [alert] = await wait_for_alerts(http, org, 1, status="active")
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        await send(http, token, T0 + 120_000, t=33)
        await settled(app)
        [same] = await alerts_of(http, org)
        assert same["id"] == alert["id"]
        assert same["count"] == 1
        await send(http, token, T0 + 180_000, t=20)
        [cleared] = await wait_for_alerts(http, org, 1, status="cleared")
        assert cleared["id"] == alert["id"]


async def test_rate_window_is_rebuilt_from_storage_after_a_restart(
    live_database: Database, tmp_path: Path
) -> None:
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        from tests.support.tenants import make_tenant

        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        await make_rule(
            http,
            org,
            device_id=device_id,
            condition={
                "type": "rate_of_change",
                "key": "t",
                "window_s": 600,
                "op": ">",
                "value": 1,
            },
        )
        await send(http, token, T0, t=20)
        await settled(app)
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        await send(http, token, T0 + 5 * MIN, t=30)  # +10 in 5 minutes, across the restart
        [alert] = await wait_for_alerts(http, org, 1)
        assert alert["device_id"] == device_id


async def test_an_edited_rule_is_evaluated_on_the_keys_it_reads_now(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """The engine indexes a device's rules by key: an edit (another key, another scope) and
    a re-enabled rule apply from the next batch on."""
    device_id, token = await new_device(live_client, live_tenant)
    other_id, other_token = await new_device(live_client, live_tenant)
    rule = await make_rule(live_client, live_tenant, device_id=device_id, condition=HOT)
    await send(live_client, token, T0, t=25)  # the device's rules are indexed: t
    await settled(live_app)
    manager = live_tenant.headers(Role.MANAGER)
    path = f"/api/v1/rules/{rule['id']}"
    edit = {"condition": {"key": "h", "op": ">", "value": 80}}
    assert (await live_client.patch(path, headers=manager, json=edit)).status_code == 200
    await send(live_client, token, T0 + 1000, t=40)  # t is no longer read
    await settled(live_app)
    assert await alerts_of(live_client, live_tenant) == []
    await send(live_client, token, T0 + 2000, h=90)
    [alert] = await wait_for_alerts(live_client, live_tenant, 1, status="active")
    assert (alert["device_id"], alert["details"]["values"]) == (device_id, {"h": 90})
    # moved to the other device, disabled: silent there; enabled again: it fires there
    moved = {"device_id": other_id, "enabled": False}
    assert (await live_client.patch(path, headers=manager, json=moved)).status_code == 200
    await send(live_client, other_token, T0 + 3000, h=95)
    await settled(live_app)
    assert len(await alerts_of(live_client, live_tenant, device_id=other_id)) == 0
    enabled = {"enabled": True}
    assert (await live_client.patch(path, headers=manager, json=enabled)).status_code == 200
    await send(live_client, token, T0 + 4000, h=99)  # the first device: not in scope now
    await send(live_client, other_token, T0 + 5000, h=96)
    [fired] = await wait_for_alerts(live_client, live_tenant, 1, device_id=other_id)
    assert fired["details"]["values"] == {"h": 96}
    await settled(live_app)
    assert [a["id"] for a in await alerts_of(live_client, live_tenant, device_id=device_id)] == [
        alert["id"]
    ]
