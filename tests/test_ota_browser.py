"""The OTA pages in headless Chromium (Debian's): upload a package, start a staged rollout
of two devices, watch its progress move live as a device reports fw_state over the device
HTTP API, pause and resume it from the page, and find the version and history on the
device page. Real uvicorn, real WebSocket, the rollout job running fast."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.browser import new_page, screenshot, sign_in
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant

expect.set_options(timeout=15_000)
FIRMWARE = b"\x7fELF pump firmware " * 4096


# browser and context: tests/support/browser.py; site here runs the rollout job every 0.2 s.
@pytest.fixture
async def site(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    async with (
        running_app(live_database, tmp_path, ota_job_interval_s=0.2) as application,
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


async def report(http: httpx.AsyncClient, token: str, **values: Any) -> None:
    """What a ThingsBoard-style device posts: client attributes over the device API."""
    answer = await http.post(
        "/api/v1/devices/me/attributes", headers={"X-Device-Token": token}, json=values
    )
    assert answer.status_code == 200, answer.text


# Records the part requests htmx sends, then asks for head, progress and head again at once.
_BURST = """async ({id, useLoad}) => {
  const base = "/ota/rollouts/" + id + "?part=";
  const head = '[data-rollout-head="' + id + '"]';
  const progress = '[data-rollout-progress="' + id + '"]';
  await FC.load(base + "head", head, "outerHTML");  // nothing of FC.load's still running
  window.requested = [];
  document.body.addEventListener("htmx:beforeRequest", (e) => {
    window.requested.push(e.detail.requestConfig.path.split("part=")[1]);
  });
  const get = useLoad
    ? (part, target) => FC.load(base + part, target, "outerHTML")
    : (part, target) => htmx.ajax("GET", base + part, { target: target, swap: "outerHTML" });
  get("head", head);
  get("progress", progress);
  get("head", head);
}"""


async def parts_fetched_in_a_burst(page: Page, rollout_id: str) -> None:
    """Three part requests at once: htmx.ajax alone drops the queued middle one (its
    "queue last" on <body>), FC.load (static/js/app.js) fetches head and progress. A last
    request through FC.load marks the end: every earlier one was sent before it."""
    for use_load, expected in ((False, ["head", "head"]), (True, ["head", "progress"])):
        await page.evaluate(_BURST, {"id": rollout_id, "useLoad": use_load})
        await page.wait_for_function("() => window.requested.length >= 2")
        await page.evaluate(
            "(id) => FC.load('/ota/rollouts/' + id + '?part=head&end', "
            "'[data-rollout-head=\"' + id + '\"]', 'outerHTML')",
            rollout_id,
        )
        await page.wait_for_function("() => window.requested.includes('head&end')")
        assert await page.evaluate("() => window.requested") == [*expected, "head&end"]
        await page.reload()  # the next round's listener alone; live again before going on
        await expect(page.locator("body")).to_have_attribute("data-subscribed", "ota")


async def test_a_manager_rolls_out_firmware_and_watches_it_live(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    tokens = dict(
        [await new_device(http, org, name="Pump A"), await new_device(http, org, name="Pump B")]
    )
    running = {"current_fw_title": "pump-fw", "current_fw_version": "1.0"}
    for token in tokens.values():  # what they run before the rollout: kept for a rollback
        await report(http, token, **running)
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.MANAGER], PASSWORD)

    # Upload through the form (htmx, multipart, the session's CSRF token in a header).
    await page.get_by_role("link", name="Updates", exact=True).click()
    await page.wait_for_url(f"{base}/ota")
    await page.get_by_label("Title").fill("pump-fw")
    await page.get_by_label("Version").fill("2.0")
    await page.set_input_files(
        "#pkg-file",
        files=[{"name": "pump.bin", "mimeType": "application/octet-stream", "buffer": FIRMWARE}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_role("status")).to_have_text("Stored firmware pump-fw 2.0.")
    row = page.locator("table.packages tbody tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("code.checksum")).to_have_attribute(
        "title", hashlib.sha256(FIRMWARE).hexdigest()
    )
    await screenshot(page, "ota")

    # A staged rollout of both devices: half first, then the rest, no pause between.
    await row.get_by_role("link", name="Roll out").click()
    await page.wait_for_url(re.compile(r"/ota/rollouts/new\?package="))
    await page.get_by_label("Name (optional)").fill("pumps to 2.0")
    await page.get_by_label("Devices (hold Ctrl or Shift for several)").select_option(
        label=["Pump A", "Pump B"]
    )
    await page.get_by_label("In stages").check()
    await page.get_by_label("Stages (e.g. 10, 50, 100)").fill("50, 100")
    await page.get_by_role("button", name="Start rollout").click()
    await page.wait_for_url(re.compile(r"/ota/rollouts/[0-9a-f-]{36}$"))
    rollout_id = page.url.rsplit("/", 1)[1]
    await expect(page.locator("[data-rollout-status]")).to_have_text("active")
    await expect(page.locator('[data-state-bar="queued"]')).to_have_attribute("value", "1")
    await expect(page.locator('[data-stage-bar="0"]')).to_have_attribute("value", "0")
    await expect(page.locator("body")).to_have_attribute("data-subscribed", "ota")
    await parts_fetched_in_a_burst(page, rollout_id)

    devices = await http.get(
        f"/api/v1/ota/rollouts/{rollout_id}/devices", headers=org.headers(Role.VIEWER)
    )
    first = next(d["device_id"] for d in devices.json()["items"] if d["stage"] == 0)
    second = next(d["device_id"] for d in devices.json()["items"] if d["stage"] == 1)

    # The device reports; the bars and its row move without a reload.
    await report(http, tokens[first], **running, fw_state="DOWNLOADING")
    await expect(page.locator('[data-state-bar="downloading"]')).to_have_attribute("value", "1")
    await expect(page.locator('[data-state-bar="queued"]')).to_have_attribute("value", "0")
    await expect(page.locator(f'[data-device-state="{first}"]')).to_have_text("downloading")
    await screenshot(page, "ota-rollout")

    # Pause and resume from the page.
    await page.get_by_role("button", name="Pause").click()
    await expect(page.locator("[data-rollout-status]")).to_have_text("paused")
    await expect(page.locator("[data-paused-reason]")).to_have_text("Paused: paused by hand")
    await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    paused = await http.get(f"/api/v1/ota/rollouts/{rollout_id}", headers=org.headers())
    assert paused.json()["status"] == "paused"
    await page.get_by_role("button", name="Resume").click()
    await expect(page.locator("[data-rollout-status]")).to_have_text("active")
    await expect(page.get_by_role("button", name="Pause")).to_be_visible()

    # The first device finishes: its stage is done and the job starts the second, live.
    await report(http, tokens[first], current_fw_title="pump-fw", current_fw_version="2.0")
    await report(http, tokens[first], fw_state="UPDATED")
    await expect(page.locator('[data-stage-bar="0"]')).to_have_attribute("value", "1")

    # The job starts the second stage, live. (This step was once missed: of the page's
    # part requests in a burst, htmx dropped one; FC.load keeps them all, proven above.)
    await expect(page.locator("[data-current-stage]")).to_have_text("2 of 2")
    await expect(page.locator('[data-state-bar="updated"]')).to_have_attribute("value", "1")
    await expect(page.locator('[data-state-bar="queued"]')).to_have_attribute("value", "1")
    assert second != first

    # The device page: the version it runs, the one assigned, and its update history.
    await page.goto(f"{base}/devices/{first}")
    firmware = page.locator('[data-versions="firmware"]')
    await expect(firmware.locator("[data-current-version]")).to_have_text("pump-fw 2.0")
    await expect(firmware.locator("[data-assigned-version]")).to_have_text("pump-fw 2.0")
    await expect(firmware.locator("[data-update-state]")).to_have_text("UPDATED")
    history = page.locator(f'[data-history-rollout="{rollout_id}"]')
    await expect(history).to_contain_text("pumps to 2.0")
    await expect(history).to_contain_text("updated")
    await expect(history.locator("td").nth(3)).to_have_text("1.0")  # what it had before
    await screenshot(page, "ota-device")

    # The second device's page follows its update live: assigned, then downloading.
    await page.goto(f"{base}/devices/{second}")
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("ota"))
    firmware = page.locator('[data-versions="firmware"]')
    await expect(firmware.locator("[data-assigned-version]")).to_have_text("pump-fw 2.0")
    await report(http, tokens[second], fw_state="DOWNLOADING")
    await expect(firmware.locator("[data-update-state]")).to_have_text("DOWNLOADING")
    await report(http, tokens[second], fw_state="FAILED", fw_error="flash write failed")
    await expect(firmware.locator("[data-update-state]")).to_contain_text("flash write failed")
    console.assert_none()
