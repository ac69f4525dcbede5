"""The plate pages in headless Chromium: real uvicorn, reads with real JPEGs sent through the
device API, thumbnails that load, a search typed differently from the read, the box drawn
over the image, the history, and watchlists changed through the API by a manager."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, Page, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.live.hub import LiveEvent
from tests.conftest import client_for
from tests.support.browser import new_page, sign_in
from tests.support.browser import screenshot as full_screenshot
from tests.support.devices import new_device
from tests.support.plate_pages import NOW_MS, jpeg, plate_read, send_read_with_image, send_reads
from tests.support.tenants import PASSWORD, Tenant, make_tenant

expect.set_options(timeout=10_000)
WIDTH, HEIGHT = 640, 360
BOX = [120, 200, 180, 60]


# browser, site and context: tests/support/browser.py. http and org talk to the served app.
@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(site[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def screenshot(page: Page, name: str) -> None:
    await full_screenshot(page, f"plates-{name}")


async def images_loaded(page: Page, selector: str) -> list[int]:
    """Wait until every image the selector finds has loaded; their natural widths."""
    await page.wait_for_function(
        """(selector) => {
            const images = [...document.querySelectorAll(selector)];
            return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0);
        }""",
        arg=selector,
    )
    widths: list[int] = await page.eval_on_selector_all(
        selector, "(images) => images.map((i) => i.naturalWidth)"
    )
    return widths


async def test_reads_with_images_search_detail_and_history(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    gate, token = await new_device(http, org, name="Gate A")
    await send_read_with_image(
        http,
        token,
        plate_read("กข 1234", ts=NOW_MS - 20_000, bbox=BOX, image=True),
        jpeg(WIDTH, HEIGHT, BOX),
    )
    await send_read_with_image(
        http,
        token,
        plate_read("AB-123", ts=NOW_MS - 10_000, region=None, bbox=[10, 20, 100, 40], image=True),
        jpeg(800, 600),
    )
    await send_reads(http, token, [plate_read("7ขค 9981", ts=NOW_MS)])  # no image
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Plates").click()
    await page.wait_for_url(f"{base}/plates")
    rows = page.locator("#plate-rows tr")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text("7ขค 9981")  # newest first
    await expect(rows.first.locator("[data-no-image]")).to_be_visible()
    widths = await images_loaded(page, "#plate-rows img[data-thumb]")
    assert len(widths) == 2
    assert all(0 < w <= WIDTH for w in widths)  # thumbnails: smaller than the images
    await screenshot(page, "list")

    # Thai digits and a dash: the read "กข 1234" is found; the search is in the address.
    await page.get_by_label("Plate", exact=True).fill("กข-๑๒๓๔")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("กข 1234")
    await page.wait_for_url(re.compile(r"/plates\?q="))
    await images_loaded(page, "#plate-rows img[data-thumb]")
    shared = page.url
    # The filtered view is a shareable URL: opened afresh, it shows the same.
    other, _ = await new_page(context)
    await other.goto(shared)
    await expect(other.locator("#plate-rows tr")).to_have_count(1)
    await expect(other.get_by_label("Plate", exact=True)).to_have_value("กข-๑๒๓๔")
    await other.close()

    # The read: the image with the box over the plate, scaled with the image.
    await rows.first.locator("a.plate-text").click()
    await page.wait_for_url(re.compile(r"/plates/reads/\d+$"))
    assert await images_loaded(page, "img[data-full-image]") == [WIDTH]
    svg = page.locator("svg.plate-box")
    await expect(svg).to_have_attribute("viewBox", f"0 0 {WIDTH} {HEIGHT}")
    rect = svg.locator("rect[data-bbox]")
    for name, value in zip(("x", "y", "width", "height"), BOX, strict=True):
        await expect(rect).to_have_attribute(name, str(value))
    image_box = await page.locator("img[data-full-image]").bounding_box()
    drawn = await rect.bounding_box()
    assert image_box is not None
    assert drawn is not None
    scale = image_box["width"] / WIDTH
    assert abs(image_box["height"] / HEIGHT - scale) < 0.01  # the image keeps its shape
    # The drawn box is the plate's, scaled as the image is, widened by half its stroke.
    stroke = float(await rect.evaluate("(r) => parseFloat(getComputedStyle(r).strokeWidth)"))
    assert stroke > 0
    expected = (
        image_box["x"] + BOX[0] * scale - stroke / 2,
        image_box["y"] + BOX[1] * scale - stroke / 2,
        BOX[2] * scale + stroke,
        BOX[3] * scale + stroke,
    )
    got = (drawn["x"], drawn["y"], drawn["width"], drawn["height"])
    assert all(abs(a - b) < 1 for a, b in zip(got, expected, strict=True)), (got, expected)
    await expect(page.locator("[data-device-link]")).to_have_attribute("href", f"/devices/{gate}")
    image_link = await page.locator("[data-image-link]").get_attribute("href")
    assert image_link is not None
    assert re.fullmatch(r"/api/v1/media/[0-9a-f-]{36}", image_link)
    opened = await page.request.get(f"{base}{image_link}")
    assert opened.status == 200
    assert opened.headers["content-type"] == "image/jpeg"
    await screenshot(page, "read")

    # The plate's history.
    await page.locator("[data-history-link]").click()
    await page.wait_for_url(re.compile(r"/plates/history/"))
    await expect(page.locator("[data-visits]")).to_have_text("1")
    await expect(page.locator("[data-camera-row]")).to_have_count(1)
    await expect(page.locator("[data-camera-row]")).to_contain_text("Gate A")
    await screenshot(page, "history")
    console.assert_none()


async def test_a_manager_keeps_a_watchlist_and_reads_show_its_badge(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    _, token = await new_device(http, org, name="Gate B")
    await send_reads(http, token, [plate_read("AB-123"), plate_read("CD 456", ts=NOW_MS + 1)])
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.MANAGER], PASSWORD)
    await page.goto(f"{base}/watchlists")
    await expect(page.locator("[data-empty-for=watchlist-rows]")).to_be_visible()
    await page.get_by_label("Name", exact=True).fill("Stolen")
    await page.get_by_label("Least confidence (0 to 1)").fill("0.5")
    await page.get_by_role("button", name="Create watchlist").click()
    row = page.locator("#watchlist-rows tr")
    await expect(row).to_have_count(1)
    await expect(row.locator("[data-entry-count]")).to_have_text("0")
    await expect(page.get_by_label("Name", exact=True)).to_have_value("")  # the form is ready again

    # A name the API refuses: said in words, nothing added.
    await page.get_by_label("Name", exact=True).fill("   ")
    await page.get_by_role("button", name="Create watchlist").click()
    await expect(page.locator("[data-form-message]")).not_to_be_empty()
    await expect(row).to_have_count(1)

    await row.get_by_role("link", name="Stolen").click()
    await page.wait_for_url(re.compile(r"/watchlists/[0-9a-f-]{36}$"))
    watchlist_url = page.url
    await page.get_by_label("Plate", exact=True).fill("ab 123")
    await page.get_by_label("Note", exact=True).fill("reported 1 May")
    await page.get_by_role("button", name="Add plate").click()
    entries = page.locator("#entry-rows tr")
    await expect(entries).to_have_count(1)
    await expect(entries.first).to_contain_text("reported 1 May")
    await page.get_by_label("Plate", exact=True).fill("CD-456")
    await page.get_by_role("button", name="Add plate").click()
    await expect(entries).to_have_count(2)
    await screenshot(page, "watchlist")

    # The reads of listed plates carry the badge.
    await page.goto(f"{base}/plates?watchlisted=1")
    await expect(page.locator("#plate-rows tr")).to_have_count(2)
    await expect(page.locator("#plate-rows [data-watchlist]")).to_have_count(2)
    await page.goto(watchlist_url)
    await page.get_by_role("button", name="Remove CD-456").click()
    await expect(entries).to_have_count(1)
    await page.goto(f"{base}/plates?watchlisted=1")
    await expect(page.locator("#plate-rows tr")).to_have_count(1)
    await expect(page.locator("#plate-rows tr")).to_contain_text("AB-123")

    # Deleting the list takes its badges away.
    await page.goto(f"{base}/watchlists")
    await page.get_by_role("button", name="Delete Stolen").click()
    await expect(page.locator("[data-empty-for=watchlist-rows]")).to_be_visible()
    await page.goto(f"{base}/plates?watchlisted=1")
    await expect(page.locator("[data-empty-for=plate-rows]")).to_be_visible()
    console.errors = [e for e in console.errors if "422" not in e]  # the refused name
    console.assert_none()


async def test_a_viewer_reads_watchlists_only(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    _, base = site
    made = await http.post(
        "/api/v1/watchlists", headers=org.headers(Role.MANAGER), json={"name": "VIP"}
    )
    assert made.status_code == 201, made.text
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.goto(f"{base}/watchlists")
    await expect(page.locator("#watchlist-rows tr")).to_have_count(1)
    await expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    await page.get_by_role("link", name="VIP").click()
    await expect(page.locator("[data-empty-for=entry-rows]")).to_be_visible()
    await expect(page.get_by_label("Plate", exact=True)).to_have_count(0)
    console.assert_none()


async def test_new_reads_join_the_top_of_the_newest_page_live(
    site: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, context: BrowserContext
) -> None:
    """The page's side of live reads: a "plate_read" message on the "plates" channel (what the
    plates hook publishes after its commit) brings the read's row, rendered by the server."""
    app, base = site
    gate, token = await new_device(http, org, name="Gate D")
    await send_reads(http, token, [plate_read("AB-123", ts=NOW_MS - 60_000)])
    page, console = await new_page(context)
    await sign_in(page, base, org.emails[Role.VIEWER], PASSWORD)
    await page.goto(f"{base}/plates")
    rows = page.locator("#plate-rows tr")
    await expect(rows).to_have_count(1)
    await expect(page.locator("body")).to_have_attribute("data-subscribed", re.compile("plates"))

    await send_reads(http, token, [plate_read("CD 456", ts=NOW_MS)])
    answer = await http.get(
        "/api/v1/plates/reads", params={"q": "CD456"}, headers=org.headers(Role.VIEWER)
    )
    fresh = answer.json()["items"][0]["id"]
    message = {"type": "plate_read", "read": {"id": fresh, "device_id": gate}}
    for _ in range(2):  # a repeated message adds nothing
        app.state.live.publish(LiveEvent(org.org_id, "plates", uuid.UUID(gate), message))
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_have_attribute("data-read-id", str(fresh))
    await expect(rows.first).to_contain_text("CD 456")

    console.assert_none()
