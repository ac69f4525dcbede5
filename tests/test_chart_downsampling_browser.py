"""A one-reading spike in 30 days of data survives the chart's downsampling, in Chromium."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.conftest import client_for
from tests.support.browser import new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.tenants import PASSWORD, Tenant, make_tenant

expect.set_options(timeout=15_000)
M, H, D = 60_000, 3_600_000, 86_400_000


@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


# Non-transparent canvas pixels in a strip of columns around x, between two y (device px).
_INK = """([key, x, top, bottom]) => {
    const u = window.fcChart.plots[key];
    const img = u.ctx.getImageData(Math.round(x) - 2, Math.round(top), 5, Math.round(bottom - top));
    let ink = 0;
    for (let i = 3; i < img.data.length; i += 4) if (img.data[i] > 0) ink++;
    return ink;
}"""


async def ink(page: Page, x: float, top: float, bottom: float) -> int:
    found: int = await page.evaluate(_INK, ["t", x, top, bottom])
    return found


async def test_a_lone_spike_in_30_days_is_drawn(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    context: BrowserContext,
) -> None:
    _, base = site
    device_id, _ = await new_device(http, org, name="Boiler")
    now = int(time.time() * 1000)
    start = now - 30 * D + H
    spike = now - 13 * D + 7 * M
    readings = [
        Reading("t", ts, Kind.NUMBER, 20.0 + (ts // M) % 60 / 10) for ts in range(start, now, 5 * M)
    ]
    readings.append(Reading("t", spike, Kind.NUMBER, 500.0))  # one reading, between two others
    item = DeviceReadings(uuid.UUID(device_id), org.org_id, readings)
    await TelemetryWriter(live_database.engine).write([item])

    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.goto(f"{base}/devices/{device_id}")
    await page.get_by_role("button", name="30d").click()
    await expect(page.get_by_role("button", name="30d")).to_have_attribute("aria-pressed", "true")
    # 30 days over about 1,270 px: hourly buckets (the 1 h preset before it had 5 s ones).
    await expect(page.locator("#charts")).to_have_attribute("data-step", str(H))
    await expect(page.locator("#charts")).to_have_attribute("data-rendered", re.compile(r"^[1-9]"))
    chart: dict[str, Any] = await page.evaluate(
        """(spikeMs) => {
            const u = window.fcChart.plots.t, spike = spikeMs / 1000;
            const i = u.data[3].indexOf(500);
            return {
                points: window.fcChart.points, width: u.width, step: window.fcChart.step,
                bucket: i < 0 ? null : u.data[0][i], mean: i < 0 ? null : u.data[1][i],
                yMax: u.scales.y.max,
                x: u.valToPos(i < 0 ? spike : u.data[0][i], "x", true),
                quiet: u.valToPos(spike - 7 * 86400, "x", true),
                top: u.valToPos(450, "y", true), bottom: u.valToPos(100, "y", true),
            };
        }""",
        spike,
    )
    # A few thousand points at most, whatever the range: one bucket per pixel column at most.
    assert 0 < chart["points"] <= chart["width"]
    assert chart["bucket"] is not None, "the spike's bucket lost its maximum"
    assert chart["bucket"] * 1000 <= spike < chart["bucket"] * 1000 + chart["step"]
    assert chart["mean"] < 100  # the mean alone would have flattened it
    assert chart["yMax"] >= 500
    # Drawn: the band's peak fills the spike's column far above the rest of the data, where
    # a column a week earlier is empty but for grid lines.
    spiked = await ink(page, chart["x"], chart["top"], chart["bottom"])
    quiet = await ink(page, chart["quiet"], chart["top"], chart["bottom"])
    assert spiked > quiet + 50, (spiked, quiet)
    await screenshot(page, "chart-30d-spike")
    console.assert_none()
