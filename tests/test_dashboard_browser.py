"""The dashboard in headless Chromium: real uvicorn, real WebSocket, real device traffic."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.browser import chromium, new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant
from tests.support.wait import wait_until

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def site(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    async with running_app(live_database, tmp_path) as application, serving(application) as url:
        yield application, f"http://{url}"


@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        await ctx.close()


async def post_value(http: httpx.AsyncClient, token: str, **values: float) -> None:
    answer = await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=values
    )
    assert answer.status_code == 200, answer.text


async def test_operator_finds_a_device_watches_it_live_and_sends_a_command(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    app, base = site
    device_id, token = await new_device(http, org, name="Freezer 7", labels=["cold"])
    await new_device(http, org, name="Pump 2")
    await post_value(http, token, temperature=-18.5)
    page, console = await new_page(context)

    await sign_in(page, base, org.emails[Role.OPERATOR], PASSWORD)
    await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    await expect(page.locator('[data-count="online"]')).to_have_text("1")
    await screenshot(page, "dashboard")

    await page.get_by_role("link", name="Devices", exact=True).click()
    await expect(page.locator("table.devices tbody tr")).to_have_count(2)
    await page.get_by_label("Search").fill("freez")
    await expect(page.locator("table.devices tbody tr")).to_have_count(1)
    assert "q=freez" in page.url  # the search is in the address, so it can be shared
    await screenshot(page, "devices")
    await page.get_by_role("link", name="Freezer 7").click()
    await page.wait_for_url(f"{base}/devices/{device_id}")
    await expect(page.locator("#charts")).to_have_attribute("data-rendered", "1")
    await expect(page.locator(f'[data-status-of="{device_id}"]')).to_have_text("online")
    await expect(page.locator("[data-live-state]")).to_have_text("· live")

    # A value the device sends reaches the latest values and the chart without a reload
    # (resent until the page's subscription is in place).
    value = 0.0
    cell = page.locator('[data-latest="temperature"]')

    async def shows_new_value() -> bool:
        nonlocal value
        value += 1
        await post_value(http, token, temperature=value)
        await asyncio.sleep(0.2)
        return (await cell.text_content() or "").strip() == str(value).removesuffix(".0")

    await wait_until(shows_new_value, within=10, every=0)
    frames = await page.locator("#charts").get_attribute("data-live-frames")
    assert frames is not None
    assert int(frames) >= 1
    points = await page.evaluate("window.fcChart.points")
    assert points == 1
    await screenshot(page, "device")

    # A command: the device waits in an HTTP long-poll and answers it.
    device = {"X-Device-Token": token}

    delivered = asyncio.Event()

    async def device_answers() -> None:
        polled = await http.get(
            "/api/v1/devices/me/commands", params={"timeout": 20}, headers=device
        )
        command = polled.json()["commands"][0]
        await delivered.wait()  # so the page learns the result over the WebSocket
        answered = await http.post(
            f"/api/v1/devices/me/commands/{command['id']}/result",
            headers=device,
            json={"status": "succeeded", "result": {"rebooted": True}},
        )
        assert answered.status_code == 200, answered.text

    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("commands"))
    answering = asyncio.create_task(device_answers())
    await wait_until(lambda: app.state.commands.is_online(uuid.UUID(device_id)))
    await page.get_by_label("Method").fill("reboot")
    await page.get_by_label("Params (JSON object)").fill('{"delay_s": 1}')
    await page.get_by_role("button", name="Send command").click()
    row = page.locator("#command-rows tr").first
    await expect(row.locator("[data-command-status]")).to_have_text("delivered")
    delivered.set()
    await expect(row.locator("[data-command-status]")).to_have_text("succeeded")
    await expect(row.locator("[data-command-result]")).to_have_text('{"rebooted":true}')
    await answering
    await expect(page.get_by_label("Method")).to_have_value("")
    await screenshot(page, "device-command")

    # Bad params are refused with a message, nothing is sent.
    await page.get_by_label("Method").fill("reboot")
    await page.get_by_label("Params (JSON object)").fill("{nope")
    await page.get_by_role("button", name="Send command").click()
    await expect(page.locator("#flash")).to_have_text("params must be a JSON object")
    await expect(page.locator("#command-rows tr")).to_have_count(1)
    console.errors = [e for e in console.errors if "422" not in e]  # the refused request
    console.assert_none()


async def test_viewer_sees_no_write_controls_and_is_refused(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    device_id, _ = await new_device(http, org, name="Freezer 8")
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await expect(page.get_by_role("link", name="Users")).to_have_count(0)
    await page.goto(f"{base}/devices/{device_id}")
    await expect(page.get_by_role("heading", name="Freezer 8")).to_be_visible()
    await expect(page.locator("form.command-form")).to_have_count(0)
    await expect(page.get_by_role("button", name="Send command")).to_have_count(0)
    await screenshot(page, "device-viewer")
    csrf = await page.locator("body").get_attribute("data-csrf")
    assert csrf
    refused = await page.request.post(
        f"{base}/devices/{device_id}/commands",
        headers={"X-CSRF-Token": csrf},
        form={"method": "reboot"},
    )
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "PERMISSION_DENIED"
    admin_only = await page.request.get(f"{base}/users")
    assert admin_only.status == 403
    console.assert_none()


async def test_every_page_renders_for_an_admin(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    device_id, token = await new_device(http, org, name="Chiller 1")
    now = int(time.time() * 1000)
    readings = [{"ts": now - i * 60_000, "values": {"t": float(i % 17)}} for i in range(0, 2000, 7)]
    answer = await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=readings
    )
    assert answer.status_code == 200, answer.text
    asset = await http.post(
        "/api/v1/assets", headers=org.headers(Role.MANAGER), json={"name": "Plant", "type": "site"}
    )
    assert asset.status_code == 201, asset.text
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.ADMIN], PASSWORD)
    pages = {
        "dashboard-admin": ("/dashboard", "Dashboard"),
        "profiles": ("/profiles", "Device profiles"),
        "assets": ("/assets", "Assets"),
        "users": ("/users", "Users"),
        "api-keys": ("/api-keys", "API keys"),
        "audit": ("/audit", "Audit log"),
        "dead-letters": ("/dead-letters", "Dead letters"),
    }
    for name, (path, heading) in pages.items():
        await (
            page.get_by_role("navigation", name="Main")
            .get_by_role("link", name=heading.split()[0] if name != "profiles" else "Profiles")
            .click()
        )
        await page.wait_for_url(f"{base}{path}")
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        if name == "assets":
            await expect(page.locator("main").get_by_text("Plant")).to_be_visible()
        await screenshot(page, name)

    # The device chart: 24 h comes from the 1-minute roll-ups, 1 h from raw readings.
    await page.goto(f"{base}/devices/{device_id}")
    charts = page.locator("#charts")
    await expect(charts).to_have_attribute("data-rendered", "9")  # 1 h: every 7th minute
    await page.get_by_role("button", name="24h").click()
    # Every minute bucket of the range, the partial ones at both ends included.
    await expect(charts).to_have_attribute("data-rendered", re.compile(r"^144[01]$"))
    await expect(page.get_by_role("button", name="24h")).to_have_attribute("aria-pressed", "true")
    await screenshot(page, "device-24h")

    # Zoom: a drag across the last minutes re-reads them raw; no preset is pressed then.
    box = await page.locator(".u-over").first.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] * 0.96, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.999, y, steps=5)
    await page.mouse.up()
    await expect(charts).to_have_attribute("data-rendered", re.compile(r"^[1-9]$"))
    await expect(page.locator(".preset[aria-pressed=true]")).to_have_count(0)

    # A custom range of an hour, two hours back: raw readings again (every 7th minute).
    start, end = await page.evaluate(
        """() => {
            const p = (n) => String(n).padStart(2, "0");
            const f = (d) => `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}` +
                `T${p(d.getHours())}:${p(d.getMinutes())}`;
            return [f(new Date(Date.now() - 152.5 * 60e3)), f(new Date(Date.now() - 88.5 * 60e3))];
        }"""
    )
    await page.get_by_text("Custom").click()
    await page.get_by_label("From").fill(start)
    await page.get_by_label("To").fill(end)
    await page.get_by_role("button", name="Show").click()
    await expect(charts).to_have_attribute("data-rendered", "9")

    # Keyboard: the first Tab reaches the skip link, the next ones the navigation.
    await page.goto(f"{base}/dashboard")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Dashboard"
    console.assert_none()


async def test_phone_width_dark_mode_and_sign_out(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, browser: Browser
) -> None:
    _, base = site
    device_id, token = await new_device(http, org, name="Freezer 9")
    ctx = await browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    try:
        page, console = await new_page(ctx)
        await sign_in(page, base, org.emails[Role.OPERATOR], PASSWORD)
        for path, name in ((f"/devices/{device_id}", "device-phone"), ("/devices", "list-phone")):
            await page.goto(f"{base}{path}")
            await expect(page.locator("main h1")).to_be_visible()
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is wider than a phone by {overflow}px"
            await screenshot(page, name)
        # The device speaks for the first time: its badge turns online without a reload.
        await page.goto(f"{base}/devices/{device_id}")
        badge = page.locator(f'[data-status-of="{device_id}"]')
        await expect(badge).to_have_text("never")
        await expect(page.locator("body")).to_have_attribute(
            "data-subscribed", "alerts commands status telemetry"
        )
        await post_value(http, token, temperature=4.0)
        await expect(badge).to_have_text("online")
        await expect(page.locator(f'[data-history-of="{device_id}"] li')).to_have_count(1)
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 19, 23)"  # the dark palette
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url(f"{base}/auth/login")
        await page.goto(f"{base}/devices")
        await page.wait_for_url(lambda url: url.endswith("/auth/login?next=/devices"))
        await screenshot(page, "login")
        console.assert_none()
    finally:
        await ctx.close()
