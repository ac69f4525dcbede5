"""Alerts: lifecycle by users (acknowledge, clear, comment, assign), roles, organizations,
filters, rule changes, and the live alerts channel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, alerts_of, make_rule, send, settled, wait_for_alerts
from tests.support.serving import serving
from tests.support.tenants import Tenant, make_tenant
from tests.test_live import ask, receive


async def open_alert(
    http: httpx.AsyncClient, org: Tenant, **rule: Any
) -> tuple[dict[str, Any], str, str]:
    """A device with a threshold rule and an active alert; (alert, device id, device token)."""
    device_id, token = await new_device(http, org)
    await make_rule(http, org, device_id=device_id, condition=HOT, **rule)
    await send(http, token, T0, t=35)
    [alert] = await wait_for_alerts(http, org, 1, device_id=device_id, status="active")
    return alert, device_id, token


async def test_acknowledge_then_the_condition_clears_it(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    alert, _, token = await open_alert(live_client, live_tenant)
    operator = live_tenant.headers(Role.OPERATOR)
    acked = await live_client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=operator)
    assert acked.status_code == 200, acked.text
    assert acked.json()["status"] == "acknowledged"
    assert acked.json()["acknowledged_by"] == str(live_tenant.user_ids[Role.OPERATOR])
    again = await live_client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=operator)
    assert again.json()["acknowledged_at"] == acked.json()["acknowledged_at"]  # idempotent
    await send(live_client, token, T0 + 1000, t=36)  # still hot: a repeat needs a new run
    await send(live_client, token, T0 + 2000, t=20)
    [cleared] = await wait_for_alerts(live_client, live_tenant, 1, status="cleared")
    assert cleared["clear_reason"] == "condition"
    assert cleared["acknowledged_at"] == acked.json()["acknowledged_at"]
    late = await live_client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=operator)
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "ALERT_CLEARED"


async def test_clear_by_hand_and_the_rule_opens_a_new_one(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    alert, device_id, token = await open_alert(live_client, live_tenant)
    operator = live_tenant.headers(Role.OPERATOR)
    cleared = await live_client.post(f"/api/v1/alerts/{alert['id']}/clear", headers=operator)
    assert cleared.status_code == 200, cleared.text
    assert (cleared.json()["status"], cleared.json()["clear_reason"]) == ("cleared", "manual")
    twice = await live_client.post(f"/api/v1/alerts/{alert['id']}/clear", headers=operator)
    assert twice.status_code == 409
    await send(live_client, token, T0 + 1000, t=37)  # still too hot
    [fresh] = await wait_for_alerts(live_client, live_tenant, 1, status="active")
    assert fresh["id"] != alert["id"]
    assert fresh["count"] == 1
    both = await alerts_of(live_client, live_tenant, device_id=device_id)
    assert [a["id"] for a in both] == [fresh["id"], alert["id"]]  # newest first


async def test_comments_and_assignment(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    alert, _, _ = await open_alert(live_client, live_tenant)
    operator = live_tenant.headers(Role.OPERATOR)
    url = f"/api/v1/alerts/{alert['id']}"
    first = await live_client.post(f"{url}/comments", headers=operator, json={"text": "on my way"})
    assert first.status_code == 201, first.text
    await live_client.post(f"{url}/comments", headers=operator, json={"text": "compressor reset"})
    empty = await live_client.post(f"{url}/comments", headers=operator, json={"text": "  "})
    assert empty.status_code == 422
    assignee = str(live_tenant.user_ids[Role.OPERATOR])
    assigned = await live_client.patch(url, headers=operator, json={"assignee_id": assignee})
    assert assigned.json()["assignee_id"] == assignee
    stranger = await make_tenant(live_client, live_database)
    foreign = await live_client.patch(
        url, headers=operator, json={"assignee_id": str(stranger.user_ids[Role.VIEWER])}
    )
    assert foreign.status_code == 422
    assert foreign.json()["error"]["code"] == "ASSIGNEE_NOT_FOUND"
    detail = await live_client.get(url, headers=live_tenant.headers(Role.VIEWER))
    assert [c["text"] for c in detail.json()["comments"]] == ["on my way", "compressor reset"]
    assert detail.json()["assignee_id"] == assignee
    unassigned = await live_client.patch(url, headers=operator, json={"assignee_id": None})
    assert unassigned.json()["assignee_id"] is None


async def test_viewers_read_only_and_other_organizations_see_nothing(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    alert, _, _ = await open_alert(live_client, live_tenant)
    viewer = live_tenant.headers(Role.VIEWER)
    for path in ("acknowledge", "clear"):
        refused = await live_client.post(f"/api/v1/alerts/{alert['id']}/{path}", headers=viewer)
        assert refused.status_code == 403
    refused = await live_client.post(
        f"/api/v1/alerts/{alert['id']}/comments", headers=viewer, json={"text": "x"}
    )
    assert refused.status_code == 403
    other = await make_tenant(live_client, live_database)
    hidden = await live_client.get(f"/api/v1/alerts/{alert['id']}", headers=other.headers())
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "ALERT_NOT_FOUND"
    acked = await live_client.post(
        f"/api/v1/alerts/{alert['id']}/acknowledge", headers=other.headers()
    )
    assert acked.status_code == 404
    assert await alerts_of(live_client, other) == []
    [still] = await alerts_of(live_client, live_tenant)
    assert still["status"] == "active"


async def test_filters_and_pages(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    critical, critical_device, _ = await open_alert(live_client, live_tenant, severity="critical")
    minor, _, _ = await open_alert(live_client, live_tenant, severity="minor")
    by_severity = await alerts_of(live_client, live_tenant, severity="critical")
    assert [a["id"] for a in by_severity] == [critical["id"]]
    by_device = await alerts_of(live_client, live_tenant, device_id=critical_device)
    assert [a["id"] for a in by_device] == [critical["id"]]
    viewer = live_tenant.headers(Role.VIEWER)
    page = await live_client.get("/api/v1/alerts", headers=viewer, params={"limit": 1})
    rest = await live_client.get(
        "/api/v1/alerts", headers=viewer, params={"limit": 1, "cursor": page.json()["next_cursor"]}
    )
    seen = [page.json()["items"][0]["id"], rest.json()["items"][0]["id"]]
    assert sorted(seen) == sorted([critical["id"], minor["id"]])
    bad = await live_client.get("/api/v1/alerts", headers=viewer, params={"status": "open"})
    assert bad.status_code == 422


async def test_disabling_or_deleting_a_rule_clears_its_alerts(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    alert, device_id, token = await open_alert(live_client, live_tenant)
    [rule] = (
        await live_client.get("/api/v1/rules", headers=live_tenant.headers(Role.VIEWER))
    ).json()["items"]
    manager = live_tenant.headers(Role.MANAGER)
    await live_client.patch(f"/api/v1/rules/{rule['id']}", headers=manager, json={"enabled": False})
    [cleared] = await alerts_of(live_client, live_tenant)
    assert (cleared["status"], cleared["clear_reason"]) == ("cleared", "rule_disabled")
    await send(live_client, token, T0 + 1000, t=40)
    await settled(live_app)
    assert len(await alerts_of(live_client, live_tenant)) == 1  # a disabled rule is silent
    await live_client.patch(f"/api/v1/rules/{rule['id']}", headers=manager, json={"enabled": True})
    await send(live_client, token, T0 + 2000, t=41)
    fresh = (await wait_for_alerts(live_client, live_tenant, 2))[0]
    assert fresh["status"] == "active"
    deleted = await live_client.delete(f"/api/v1/rules/{rule['id']}", headers=manager)
    assert deleted.status_code == 204
    kept = await alerts_of(live_client, live_tenant, device_id=device_id)
    assert [(a["status"], a["rule_id"]) for a in kept] == [("cleared", None), ("cleared", None)]
    assert kept[0]["clear_reason"] == "rule_deleted"
    assert alert["id"] == kept[1]["id"]


@pytest.fixture
async def served(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    async with running_app(live_database, tmp_path) as app, serving(app) as url:
        yield app, url


async def test_alert_changes_are_pushed_live(
    served: tuple[FastAPI, str], live_database: Database
) -> None:
    app, url = served
    async with client_for(app) as http:
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        await make_rule(http, org, device_id=device_id, condition=HOT, name="Hot")
        async with connect(f"ws://{url}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws:
            assert (await ask(ws, type="subscribe", channel="alerts"))["type"] == "subscribed"
            await send(http, token, T0, t=50)
            opened = await receive(ws)
            assert (opened["type"], opened["event"]) == ("alert", "alert.opened")
            assert opened["alert"]["device_id"] == device_id
            assert opened["alert"]["name"] == "Hot"
            await http.post(
                f"/api/v1/alerts/{opened['alert']['id']}/acknowledge",
                headers=org.headers(Role.OPERATOR),
            )
            acked = await receive(ws)
            assert (acked["event"], acked["alert"]["status"]) == (
                "alert.acknowledged",
                "acknowledged",
            )
            await send(http, token, T0 + 1000, t=10)
            cleared = await receive(ws)
            assert (cleared["event"], cleared["alert"]["clear_reason"]) == (
                "alert.cleared",
                "condition",
            )
