"""Notifications metered through the real dispatcher: a rule fires, the outbox delivers to a
local webhook receiver (after a refused attempt) and in-app; a delivery given up is not
counted, nor are its attempts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, make_rule, send
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until
from tests.support.webhook import WebhookReceiver

SECRET = "whsec-usage-0123456789abcdef"
FAST: dict[str, Any] = {
    "notification_poll_s": 0.05,
    "notification_retry_base_s": 0.05,
    "notification_retry_max_s": 0.2,
    "notification_max_attempts": 2,
}


@pytest.fixture
async def receivers() -> AsyncIterator[tuple[WebhookReceiver, WebhookReceiver]]:
    """One receiver that refuses once then takes, one that always refuses."""
    good, bad = WebhookReceiver(script=[503]), WebhookReceiver(status=500)
    for hook in (good, bad):
        await hook.start()
    yield good, bad
    for hook in (good, bad):
        await hook.stop()


async def channel(http: httpx.AsyncClient, org: Tenant, **body: Any) -> str:
    response = await http.post(
        "/api/v1/notification-channels",
        headers=org.headers(Role.ADMIN),
        json={"name": f"ch {uuid.uuid4().hex[:8]}", **body},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def statuses(http: httpx.AsyncClient, org: Tenant, channel_id: str) -> list[str]:
    response = await http.get(
        f"/api/v1/notification-channels/{channel_id}/deliveries", headers=org.headers(Role.ADMIN)
    )
    assert response.status_code == 200, response.text
    return [d["status"] for d in response.json()["items"]]


async def test_delivered_notifications_are_metered_by_channel_type(
    live_database: Database,
    tmp_path: Path,
    receivers: tuple[WebhookReceiver, WebhookReceiver],
) -> None:
    good, bad = receivers
    async with running_app(live_database, tmp_path, **FAST) as app, client_for(app) as http:
        meter: UsageMeter = app.state.usage_meter
        org = await make_tenant(http, live_database)
        other = await make_tenant(http, live_database)  # its own channel, never triggered
        hooks = [
            await channel(http, org, type="webhook", url=good.url, secret=SECRET),
            await channel(http, org, type="webhook", url=bad.url, secret=SECRET),
        ]
        in_app = await channel(http, org, type="in_app")
        await channel(http, other, type="webhook", url=good.url, secret=SECRET)
        device_id, token = await new_device(http, org)
        await make_rule(http, org, device_id=device_id, condition=HOT)
        await send(http, token, T0, t=35)  # alert opened: one delivery per channel

        async def settled() -> bool:
            done = [await statuses(http, org, c) for c in (*hooks, in_app)]
            return done == [["delivered"], ["failed"], ["delivered"]]

        await wait_until(settled, within=15, every=0.05)
        assert [r.status for r in good.received] == [503, 200]
        assert [r.status for r in bad.received] == [500, 500]
        await meter.flush()
        response = await http.get("/api/v1/usage", headers=org.headers(Role.ADMIN))
        assert response.status_code == 200, response.text
        metered = {
            r["transport"]: r["n"] for r in response.json()["rows"] if r["kind"] == "notifications"
        }
        assert metered == {"webhook": 1, "in_app": 1}
        assert meter.today(org.org_id, UsageKind.NOTIFICATIONS) == 2
        assert meter.today(other.org_id, UsageKind.NOTIFICATIONS) == 0
