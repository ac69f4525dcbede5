"""The advisory pages in headless Chromium: real uvicorn, real WebSocket, analytics rows
written through the models (the engine is not part of these tests)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, expect
from sqlalchemy import update

from fleetcore.analytics.models import AnalyticsFinding, DeviceHealth
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.live.hub import LiveEvent
from tests.conftest import client_for, running_app
from tests.support.advisory import add_finding, add_health, add_recommendation, watch
from tests.support.browser import new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant

expect.set_options(timeout=10_000)
SPEED_POLICY = {
    "methods": {"set_speed": {"params": {"rpm": {"type": "number", "min": 0, "max": 1500}}}}
}


# browser and context: tests/support/browser.py. http and org talk to the served app.
@pytest.fixture
async def site(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    """The app served without its analytics engine: these tests write the engine's rows
    themselves, and a running engine would recompute a device's health from the readings a
    test posts and overwrite the score the test set (a race seen in CI)."""
    async with (
        running_app(live_database, tmp_path, analytics_enabled=False) as application,
        serving(application) as url,
    ):
        yield application, f"http://{url}"


@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


def _finding_message(finding: AnalyticsFinding) -> dict[str, object]:
    """What the engine publishes on the "analytics" channel for a stored finding."""
    return {
        "type": "finding",
        "device_id": str(finding.device_id),
        "finding": {
            "id": finding.id,
            "device_id": str(finding.device_id),
            "key": finding.key,
            "method": finding.method,
            "severity": finding.severity,
            "ts": finding.ts,
            "score": finding.score,
            "threshold": finding.threshold,
        },
    }


async def _publish(app: FastAPI, database: Database, finding_id: int) -> None:
    async with database.session() as session:
        finding = await session.get(AnalyticsFinding, finding_id)
        assert finding is not None
    app.state.live.publish(
        LiveEvent(
            finding.organization_id, "analytics", finding.device_id, _finding_message(finding)
        )
    )


async def live_database_health(database: Database, device_id: str, score: float) -> None:
    """Change a device's health score, as the engine would."""
    async with database.session(write=True) as session:
        await session.execute(
            update(DeviceHealth)
            .where(DeviceHealth.device_id == uuid.UUID(device_id))
            .values(score=score)
        )
        await session.commit()


async def test_operator_approves_an_inspection_and_rejects_another(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    context: BrowserContext,
) -> None:
    """Through the recommendations API (POST /api/v1/recommendations/{id}/approve|reject|done)."""
    _, base = site
    device_id, _ = await new_device(http, org, name="Pump 4")
    await watch(live_database, device_id, {"keys": {"rpm": {}}}, safety_policy=SPEED_POLICY)
    inspect = await add_recommendation(
        live_database, org.org_id, device_id, title="Inspect the pump bearings"
    )
    other = await add_recommendation(
        live_database, org.org_id, device_id, title="Inspect the coupling"
    )
    too_fast = await add_recommendation(
        live_database,
        org.org_id,
        device_id,
        title="Raise the speed",
        kind="adjust_setpoint",
        method="set_speed",
        params={"rpm": 5000},  # above the policy's 1500
    )
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.OPERATOR], PASSWORD)
    await (
        page.get_by_role("navigation", name="Main")
        .get_by_role("link", name="Recommendations")
        .click()
    )
    await page.wait_for_url(f"{base}/recommendations")
    await expect(page.locator("#proposed-list [data-recommendation-id]")).to_have_count(3)
    await screenshot(page, "recommendations")

    # Approve the inspection: it moves to the history, approved, waiting to be marked done.
    card = page.locator(f'[data-recommendation-id="{inspect}"]')
    await card.get_by_role("button", name="Approve").click()
    decided = page.locator(f'#history-list [data-recommendation-id="{inspect}"]')
    await expect(decided.locator("[data-rec-status]")).to_have_text("approved")
    await expect(decided.locator("[data-approvals]")).to_contain_text("1 of 1")
    await expect(decided.locator("[data-approvals]")).to_contain_text(org.emails[Role.OPERATOR])
    await decided.get_by_role("button", name="Mark done").click()
    await expect(decided.locator("[data-rec-status]")).to_have_text("executed")

    # Reject the other with a reason.
    card = page.locator(f'[data-recommendation-id="{other}"]')
    await card.get_by_label("Reason for rejecting").fill("inspected last week")
    await card.get_by_role("button", name="Reject").click()
    rejected = page.locator(f'#history-list [data-recommendation-id="{other}"]')
    await expect(rejected.locator("[data-rec-status]")).to_have_text("rejected")
    await expect(rejected).to_contain_text("inspected last week")

    # The safety validator refuses a speed beyond the policy: said in words, nothing changes.
    card = page.locator(f'[data-recommendation-id="{too_fast}"]')
    await card.get_by_role("button", name="Approve").click()
    refusal = card.locator("[data-rec-message]")
    await expect(refusal).to_be_visible()
    await expect(refusal).to_contain_text("The safety validator refused this approval")
    await expect(refusal.locator("li").first).not_to_be_empty()
    await expect(card.locator("[data-rec-status]")).to_have_text("proposed")
    await screenshot(page, "recommendations-decided")

    api = org.headers(Role.VIEWER)
    statuses = {}
    for rec_id in (inspect, other, too_fast):
        answer = await http.get(f"/api/v1/recommendations/{rec_id}", headers=api)
        assert answer.status_code == 200, answer.text
        statuses[rec_id] = answer.json()["status"]
    assert statuses == {inspect: "executed", other: "rejected", too_fast: "proposed"}
    console.errors = [e for e in console.errors if "422" not in e]  # the refused approval
    console.assert_none()


async def test_new_findings_arrive_live_on_the_analytics_page(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    context: BrowserContext,
) -> None:
    app, base = site
    pump, _ = await new_device(http, org, name="Pump 5")
    fan, _ = await new_device(http, org, name="Fan 6")
    await add_health(live_database, org.org_id, pump, 0.35)
    await add_health(live_database, org.org_id, fan, 0.9, trend="stable", contributors=[])
    now = int(time.time() * 1000)
    first = await add_finding(live_database, org.org_id, pump, ts=now - 60_000)
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Analytics").click()
    await page.wait_for_url(f"{base}/analytics")
    await expect(page.get_by_role("heading", name="Analytics", exact=True)).to_be_visible()
    rows = page.locator("#ranking-rows tr")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("Pump 5")
    await expect(page.locator("#finding-rows tr")).to_have_count(1)
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("analytics"))

    # The engine stores a finding and publishes it: it appears on top without a reload,
    # and the ranking is read again (the fan is now the worst).
    await live_database_health(live_database, fan, 0.1)
    fresh = await add_finding(
        live_database, org.org_id, fan, ts=now, method="spike", severity="critical", key="current"
    )
    await _publish(app, live_database, fresh)
    await expect(page.locator("#finding-rows tr")).to_have_count(2)
    top = page.locator("#finding-rows tr").first
    await expect(top).to_have_attribute("data-finding-id", str(fresh))
    await expect(top).to_contain_text("Fan 6")
    await expect(top.locator(".sev")).to_have_text("critical")
    await expect(rows.first).to_contain_text("Fan 6")
    # A message for a row already shown adds nothing: the next new one makes three rows.
    await _publish(app, live_database, fresh)
    await _publish(app, live_database, first)
    third = await add_finding(live_database, org.org_id, pump, ts=now + 1)
    await _publish(app, live_database, third)
    await expect(page.locator("#finding-rows tr").first).to_have_attribute(
        "data-finding-id", str(third)
    )
    await expect(page.locator("#finding-rows tr")).to_have_count(3)
    await screenshot(page, "analytics")
    await page.locator(f'[data-finding-id="{fresh}"] a').first.click()
    await page.wait_for_url(f"{base}/analytics/findings/{fresh}")
    await expect(page.get_by_role("heading", name="current on Fan 6")).to_be_visible()
    console.assert_none()


async def test_device_charts_mark_findings_and_show_health(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    context: BrowserContext,
) -> None:
    app, base = site
    device_id, token = await new_device(http, org, name="Spindle 7")
    await watch(live_database, device_id, {"keys": {"t": {"wear": {"threshold": 80.0}}}})
    now = int(time.time() * 1000)
    readings = [{"ts": now - i * 60_000, "values": {"t": 20.0 + i % 3}} for i in range(0, 50)]
    answer = await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=readings
    )
    assert answer.status_code == 200, answer.text
    for minutes in (10, 30):
        await add_finding(live_database, org.org_id, device_id, key="t", ts=now - minutes * 60_000)
    await add_finding(live_database, org.org_id, device_id, key="t", ts=now - 3 * 3_600_000)
    await add_health(live_database, org.org_id, device_id, 0.6, wear={})
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.goto(f"{base}/devices/{device_id}")
    await expect(page.locator("#device-analytics")).to_contain_text("60%")
    await expect(page.locator('[data-wear-key="t"]')).to_contain_text(
        "not enough data (0 of 100 hourly points)"
    )
    charts = page.locator("#charts")
    await expect(charts).to_have_attribute("data-rendered", "50")
    figure = page.locator("#charts figure.chart").first
    await expect(figure).to_have_attribute("data-marks", "2")  # the 1 h view: two of three
    await expect(figure.locator("figcaption")).to_contain_text("2 findings")
    await page.get_by_role("button", name="24h").click()
    await expect(figure).to_have_attribute("data-marks", "3")
    await page.get_by_role("button", name="1h").click()
    await expect(figure).to_have_attribute("data-marks", "2")

    # A finding published live is marked on the chart without a reload.
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("analytics"))
    fresh = await add_finding(live_database, org.org_id, device_id, key="t", ts=now - 60_000)
    await _publish(app, live_database, fresh)
    await expect(figure).to_have_attribute("data-marks", "3")
    await screenshot(page, "device-analytics")
    console.assert_none()
