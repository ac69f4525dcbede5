"""The dashboard in headless Chromium: real uvicorn, real WebSocket, real device traffic."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for
from tests.support.browser import new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.rules import HOT, make_rule, send, wait_for_alerts
from tests.support.tenants import PASSWORD, Tenant, make_tenant
from tests.support.wait import wait_until

expect.set_options(timeout=10_000)


# browser, site and context: tests/support/browser.py. http and org talk to the served app.
@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


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
    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "hx-request" in r.headers else None)
    await page.get_by_label("Search").fill("freez")
    await expect(page.locator("table.devices tbody tr")).to_have_count(1)
    assert "q=freez" in page.url  # the search is in the address, so it can be shared
    # Leaving the field starts no second search: its history push would cancel a click on a result.
    await page.get_by_label("Search").press("Tab")
    await page.get_by_label("Status").select_option("active")
    await page.wait_for_url(re.compile(r"status=active"))
    await expect(page.locator("table.devices tbody tr")).to_have_count(1)
    assert len(searches) == 2, searches
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
        try:  # shown as soon as it arrives; not within half a second, send another
            await expect(cell).to_have_text(str(value).removesuffix(".0"), timeout=500)
        except AssertionError:
            return False
        return True

    await wait_until(shows_new_value, within=10, every=0)
    # The chart draws the value at the next animation frame, after the cell shows it.
    await expect(page.locator("#charts")).to_have_attribute("data-live-frames", re.compile("[1-9]"))
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
        "rules": ("/rules", "Rules"),
        "alerts": ("/alerts", "Alerts"),
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

    # The device chart, downsampled to its width: 24 h in 2-minute buckets from the 1-minute
    # roll-ups, 1 h in 5-second buckets from raw readings; only buckets holding data come.
    await page.goto(f"{base}/devices/{device_id}")
    charts = page.locator("#charts")
    await expect(charts).to_have_attribute("data-rendered", "9")  # 1 h: every 7th minute
    await page.get_by_role("button", name="24h").click()
    await expect(charts).to_have_attribute("data-step", "120000")
    # One bucket per reading (every 7th minute), the partial ones at both ends included.
    await expect(charts).to_have_attribute("data-rendered", re.compile(r"^20[5-7]$"))
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
        phone_pages = (
            (f"/devices/{device_id}", "device-phone"),
            ("/devices", "list-phone"),
            ("/alerts", "alerts-phone"),
            ("/rules", "rules-phone"),
        )
        for path, name in phone_pages:
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
            "data-subscribed", "alerts commands ota status telemetry"
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


async def test_operator_acknowledges_an_alert_and_sees_a_new_one_arrive_live(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    now = int(time.time() * 1000)
    first, first_token = await new_device(http, org, name="Freezer A")
    second, second_token = await new_device(http, org, name="Freezer B")
    await make_rule(http, org, name="Freezer A warm", device_id=first, condition=HOT)
    await make_rule(
        http, org, name="Freezer B warm", device_id=second, condition=HOT, severity="critical"
    )
    await send(http, first_token, now - 60_000, t=35)
    [alert] = await wait_for_alerts(http, org, 1, status="active")
    page, console = await new_page(context)
    await sign_in(page, base_url(site), org.emails[Role.OPERATOR], PASSWORD)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Alerts").click()
    await page.wait_for_url(f"{base_url(site)}/alerts")
    row = page.locator(f'tr[data-alert-id="{alert["id"]}"]')
    await expect(row.locator("[data-alert-status]")).to_have_text("active")
    await row.get_by_role("button", name="Acknowledge").click()
    await expect(row.locator("[data-alert-status]")).to_have_text("acknowledged")
    await expect(row.get_by_role("button", name="Acknowledge")).to_have_count(0)
    await expect(row.get_by_role("button", name="Clear")).to_be_visible()

    # A reading crosses the threshold: its alert appears on top without a reload.
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("alerts"))
    await send(http, second_token, now - 30_000, t=41)
    await expect(page.locator("#alert-rows tr")).to_have_count(2)
    fresh = page.locator("#alert-rows tr").first
    await expect(fresh).to_contain_text("Freezer B warm")
    await expect(fresh.locator(".sev")).to_have_text("critical")
    await expect(fresh.locator("[data-alert-status]")).to_have_text("active")
    await screenshot(page, "alerts")

    # The alert's page: comment, then clear; the head follows.
    await fresh.get_by_role("link", name="Freezer B warm").click()
    await expect(page.get_by_role("heading", name="Freezer B warm")).to_be_visible()
    await page.get_by_label("Add a comment").fill("checking the door seal")
    await page.get_by_role("button", name="Comment").click()
    await expect(page.locator("#comments li")).to_have_count(1)
    await expect(page.locator("#comments")).to_contain_text("checking the door seal")
    await expect(page.get_by_text("No comments yet.")).to_have_count(0)
    await expect(page.get_by_label("Add a comment")).to_have_value("")
    await page.locator("#alert-head").get_by_role("button", name="Clear").click()
    await expect(page.locator("#alert-head [data-alert-status]")).to_have_text("cleared")
    await screenshot(page, "alert")

    # The dashboard counts active alerts by severity (one acknowledged, one cleared: none),
    # and follows new ones live: Freezer B, cleared by hand, fires again on its next reading.
    await page.goto(f"{base_url(site)}/dashboard")
    await expect(page.locator('[data-active-count="critical"]')).to_have_text("0")
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("alerts"))
    await send(http, second_token, now - 10_000, t=45)
    await expect(page.locator('[data-active-count="critical"]')).to_have_text("1")
    await expect(page.locator("#alert-feed li")).to_have_count(1)
    await expect(page.locator("#alert-feed li")).to_contain_text("Freezer B warm")
    await screenshot(page, "dashboard-alerts")
    await send(http, first_token, now - 20_000, t=20)  # Freezer A cools: its alert clears
    await wait_for_alerts(http, org, 1, status="cleared", device_id=first)
    await page.goto(f"{base_url(site)}/devices/{first}")
    await expect(page.locator("#device-alerts li")).to_have_count(0)
    console.assert_none()


async def test_manager_creates_a_rule_and_previews_it_on_a_chart(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, token = await new_device(http, org, name="Cold room")
    now = int(time.time() * 1000)
    readings = [
        {"ts": now - (40 - i) * 60_000, "values": {"t": 35.0 if 10 <= i < 15 or i >= 30 else 20.0}}
        for i in range(40)
    ]
    answer = await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=readings
    )
    assert answer.status_code == 200, answer.text
    page, console = await new_page(context)
    base = base_url(site)
    await sign_in(page, base, org.emails[Role.MANAGER], PASSWORD)
    await page.goto(f"{base}/rules")
    await page.get_by_role("link", name="New rule").click()
    await page.wait_for_url(f"{base}/rules/new")
    # Only the fields of the chosen condition type show.
    await expect(page.locator("#cond-min")).to_be_hidden()
    await page.get_by_label("Name").fill("Cold room warm")
    await page.get_by_label("Watches").select_option(label="Cold room")
    await page.locator("#cond-key").fill("t")
    await page.locator("#cond-op").select_option(">")
    await page.locator("#cond-value").fill("warm")
    await page.get_by_role("button", name="Create rule").click()
    # Refused next to the form, what was typed kept.
    await expect(page.locator("#form-errors")).to_contain_text("value must be a number")
    await expect(page.get_by_label("Name")).to_have_value("Cold room warm")
    await page.locator("#cond-value").fill("30")
    await page.get_by_role("button", name="Create rule").click()
    await page.wait_for_url(re.compile(r"/rules/[0-9a-f-]{36}\?saved=1$"))
    await expect(page.get_by_role("status")).to_have_text("Saved.")

    await page.get_by_label("Device").select_option(label="Cold room")
    await page.get_by_label("Range").select_option("1h")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("[data-episodes]")).to_have_attribute("data-episodes", "2")
    await expect(page.locator("[data-dryrun]")).to_have_attribute("data-rendered", "40")
    await expect(page.locator("table.episodes tbody tr")).to_have_count(2)
    await expect(page.locator("table.episodes tbody tr").last).to_contain_text("still open")
    await expect(page.locator(".dryrun-charts .uplot")).to_have_count(1)
    await screenshot(page, "rule-preview")

    # A bad condition in the preview is explained in its place.
    await page.locator("#cond-type").select_option("outside_range")
    await expect(page.locator("#cond-min")).to_be_visible()
    await page.locator("#cond-min").fill("9")
    await page.locator("#cond-max").fill("1")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("#preview")).to_contain_text("min must be below max")
    await page.goto(f"{base}/rules")
    await expect(page.locator("table.rules tbody tr")).to_have_count(1)
    await expect(page.locator("table.rules")).to_contain_text("device: Cold room")
    await screenshot(page, "rules")
    console.errors = [e for e in console.errors if "422" not in e]  # the refused requests
    console.assert_none()


async def test_viewer_sees_no_alert_or_rule_controls(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    device_id, token = await new_device(http, org, name="Freezer V")
    rule = await make_rule(http, org, name="Freezer V warm", device_id=device_id, condition=HOT)
    await send(http, token, int(time.time() * 1000) - 10_000, t=33)
    [alert] = await wait_for_alerts(http, org, 1, status="active")
    page, console = await new_page(context)
    base = base_url(site)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.goto(f"{base}/alerts")
    await expect(page.locator(f'tr[data-alert-id="{alert["id"]}"]')).to_be_visible()
    await expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    await expect(page.get_by_role("button", name="Clear")).to_have_count(0)
    await screenshot(page, "alerts-viewer")
    await page.goto(f"{base}/alerts/{alert['id']}")
    await expect(page.get_by_label("Add a comment")).to_have_count(0)
    await expect(page.get_by_role("button", name="Acknowledge")).to_have_count(0)
    await page.goto(f"{base}/rules")
    await expect(page.get_by_role("link", name="New rule")).to_have_count(0)
    await expect(page.get_by_role("button", name="Delete")).to_have_count(0)
    await page.goto(f"{base}/rules/{rule['id']}")
    await expect(page.get_by_role("button", name="Save rule")).to_have_count(0)
    await expect(page.get_by_label("Name")).to_be_disabled()
    # Read only, but the saved rule can be replayed.
    await page.get_by_label("Range").select_option("1h")
    await page.get_by_role("button", name="Preview").click()
    await expect(page.locator("[data-episodes]")).to_have_attribute("data-episodes", "1")
    await expect(page.locator(".dryrun-charts .uplot")).to_have_count(1)
    await screenshot(page, "rule-viewer")
    csrf = await page.locator("body").get_attribute("data-csrf")
    assert csrf
    refused = await page.request.post(
        f"{base}/alerts/{alert['id']}/acknowledge", headers={"X-CSRF-Token": csrf}
    )
    assert refused.status == 403
    # A missing page is an HTML page in the layout.
    await page.goto(f"{base}/alerts/{uuid.uuid4()}")
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await screenshot(page, "not-found")
    console.errors = [e for e in console.errors if "404" not in e]
    console.assert_none()


def base_url(site: tuple[FastAPI, str]) -> str:
    return site[1]
