"""The /usage page in headless Chromium: an admin sees a chart per kind drawn from metered
data (two days: one counted by a second meter with yesterday's clock), and the CSV link
downloads the organization's rows."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter
from tests.conftest import client_for, running_app
from tests.support.browser import new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant

expect.set_options(timeout=15_000)

# Pixels of a chart's canvas that are not transparent: uPlot drew something there.
_INK = """(section) => {
    const canvas = section.querySelector(".usage-chart canvas");
    if (!canvas) return -1;
    const img = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let ink = 0;
    for (let i = 3; i < img.data.length; i += 4) if (img.data[i] > 0) ink++;
    return ink;
}"""


@pytest.fixture
async def site(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    """The served app; counters flushed only when the test says (its rows then stay put)."""
    async with (
        running_app(live_database, tmp_path, usage_flush_interval_s=3600) as app,
        serving(app) as url,
    ):
        yield app, f"http://{url}"


@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def ink_of(page: Page, kind: str) -> int:
    """A kind's chart, once drawn with its two days: its canvas's ink."""
    section = page.locator(f'section[data-kind="{kind}"]')
    await expect(section.locator(".usage-chart")).to_have_attribute("data-rendered", "2")
    ink: int = await section.evaluate(_INK)
    return ink


async def test_an_admin_sees_the_charts_and_downloads_the_csv(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    context: BrowserContext,
) -> None:
    app, base = site
    meter: UsageMeter = app.state.usage_meter
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    # Today: a device's telemetry over HTTP (3 messages, 5 readings).
    _, token = await new_device(http, org)
    for payload in ({"t": 1, "h": 2}, {"t": 3}, {"t": 4, "h": 5}):
        sent = await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=payload
        )
        assert sent.status_code == 200, sent.text
    await meter.flush()
    # Yesterday: another process's meter (its clock a day back) counted MQTT traffic.
    earlier = UsageMeter(live_database, clock=lambda: time.time() - 86_400)
    earlier.count(org.org_id, UsageKind.READINGS, 40, transport="mqtt")
    earlier.count(org.org_id, UsageKind.MESSAGES, 20, transport="mqtt")
    earlier.count(org.org_id, UsageKind.API_REQUESTS, 7, transport="api_key")
    await earlier.flush()

    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.ADMIN], PASSWORD)
    await page.get_by_role("link", name="Usage", exact=True).click()
    await page.wait_for_url(f"{base}/usage")
    await expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    for kind, total in (("readings", 45), ("messages", 23)):
        section = page.locator(f'section[data-kind="{kind}"]')
        await expect(section.locator("[data-total]")).to_have_text(str(total))
        assert await ink_of(page, kind) > 0, kind
    # A kind nothing was counted of: its chart is there, every period at 0.
    await expect(page.locator('section[data-kind="commands"] [data-total]')).to_have_text("0")
    await screenshot(page, "usage_page")

    async with page.expect_download() as waiting:
        await page.get_by_role("link", name="Export CSV").click()
    download = await waiting.value
    assert download.suggested_filename.endswith(".csv")
    saved = await download.path()
    lines = list(csv.reader(io.StringIO(await asyncio.to_thread(saved.read_text))))
    assert lines[0] == ["organization_id", "granularity", "period", "kind", "transport", "n"]
    assert {line[0] for line in lines[1:]} == {str(org.org_id)}
    assert {line[1] for line in lines[1:]} == {"day"}
    got = {(line[2], line[3], line[4]): int(line[5]) for line in lines[1:]}
    day, prev = today.isoformat(), yesterday.isoformat()
    assert got == {
        (prev, "readings", "mqtt"): 40,
        (prev, "messages", "mqtt"): 20,
        (prev, "api_requests", "api_key"): 7,
        (day, "readings", "http"): 5,
        (day, "messages", "http"): 3,
        (day, "devices_active", ""): 1,
        (day, "api_requests", "user"): 1,  # new_device; pages are no API requests
    }
    console.assert_none()
