"""The vending pages in headless Chromium: a manager at a desk, a driver on a phone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.vending.models import PickLine, ServiceOrder, ServiceVisit, SlotStock
from tests.conftest import client_for
from tests.support.browser import ARTIFACTS, new_page, sign_in
from tests.support.devices import new_device
from tests.support.http_clients import local_client
from tests.support.tenants import PASSWORD, Tenant, make_tenant
from tests.support.vending_fleet import MONTH, TODAY, Fleet, seed_fleet

expect.set_options(timeout=10_000)
PHONE = {"width": 360, "height": 740}
TAP_MIN_PX = 44


async def screenshot(page: Page, name: str) -> None:
    """A full-page screenshot that leaves the inputs as they were: by default Playwright
    hides the caret through each input's style and leaves style="" behind, which htmx then
    copies onto a swapped-in element (a CSP violation no user would cause)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, caret="initial")


# browser and site: tests/support/browser.py.
@pytest.fixture
async def org(site: tuple[FastAPI, str], live_database: Database) -> Tenant:
    async with client_for(site[0]) as http:
        return await make_tenant(http, live_database)


@pytest.fixture
async def fleet(site: tuple[FastAPI, str], live_database: Database, org: Tenant) -> Fleet:
    async with client_for(site[0]) as http:
        lobby, _ = await new_device(http, org, name="Lobby snacks")
        station, _ = await new_device(http, org, name="Station drinks")
    return await seed_fleet(live_database, org, lobby, station, now=datetime.now(UTC))


async def test_a_manager_sees_the_fleet_and_a_machine_with_its_chart(
    site: tuple[FastAPI, str], browser: Browser, org: Tenant, fleet: Fleet
) -> None:
    _, base = site
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page, console = await new_page(context)
        await sign_in(page, base, org.emails[Role.MANAGER], PASSWORD)
        await page.get_by_role("link", name="Vending", exact=True).click()
        await page.wait_for_url(f"{base}/vending")
        today = page.locator('[data-sales="today"]')
        await expect(today.locator("[data-units]")).to_have_text(str(TODAY[0]))
        await expect(page.locator('[data-sales="30d"] [data-revenue]')).to_have_text(MONTH[1])
        await screenshot(page, "vending-fleet")

        sold_out = page.locator('[data-list="sold-out"]')
        await sold_out.get_by_role("link", name="Lobby snacks").click()
        await page.wait_for_url(f"{base}/vending/machines/{fleet.machine}")
        chart = page.locator("#sales-chart")
        await expect(chart).to_have_attribute("data-rendered", "30")
        await expect(chart.locator("canvas")).to_have_count(1)
        box = await chart.locator("canvas").bounding_box()
        assert box is not None
        assert box["width"] > 600  # drawn at the card's width, not a collapsed canvas
        await expect(page.locator('[data-slot="A2"] [data-sold-out]')).to_be_visible()
        await expect(page.locator('[data-slot="A1"] meter')).to_have_attribute("value", "6")
        await expect(page.locator("table.audits")).to_contain_text("damaged")
        await screenshot(page, "vending-machine")

        await page.get_by_role("link", name="planogram v2").click()
        await page.wait_for_url(f"{base}/vending/planograms/{fleet.planogram}")
        await expect(page.locator('tr[data-slot="A2"]')).to_contain_text("Chips")
        await expect(page.locator("[data-suggestion]")).to_contain_text("Too few data")
        await screenshot(page, "vending-planogram")
        await page.goto(f"{base}/vending/products")
        await expect(page.locator("table.products tbody tr")).to_have_count(4)
        await screenshot(page, "vending-products")
        console.assert_none()
    finally:
        await context.close()


async def no_horizontal_overflow(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"


async def small_targets(page: Page) -> list[str]:
    """Controls of the pick list lower than a finger's 44 px."""
    found: list[str] = await page.evaluate(
        """(min) => [...document.querySelectorAll(
              'main button, main input:not([type=hidden]):not([type=checkbox]), main label.tap,'
              + ' main .order-link, main summary')]
            .filter((el) => el.offsetParent !== null)
            .map((el) => [el, el.getBoundingClientRect().height])
            .filter(([, h]) => h < min)
            .map(([el, h]) => el.outerHTML.slice(0, 80) + ' ' + h)""",
        TAP_MIN_PX,
    )
    return found


async def test_a_driver_works_a_service_order_on_a_phone(
    site: tuple[FastAPI, str],
    browser: Browser,
    org: Tenant,
    fleet: Fleet,
    live_database: Database,
) -> None:
    _, base = site
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page, console = await new_page(context)
        await page.goto(f"{base}/vending/routes")
        await page.get_by_label("Email").fill(org.emails[Role.DRIVER])
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").tap()
        await page.wait_for_url(f"{base}/vending/routes")
        await expect(page.get_by_role("heading", name="My routes")).to_be_visible()
        await expect(page.locator("section.route")).to_have_count(1)  # not the South loop
        await no_horizontal_overflow(page)
        assert await small_targets(page) == []
        await screenshot(page, "vending-phone-routes")

        # Their machine fits the phone too (the chart drawn at its width).
        await page.get_by_role("link", name="Lobby snacks").tap()
        await page.wait_for_url(f"{base}/vending/machines/{fleet.machine}")
        await expect(page.locator("#sales-chart")).to_have_attribute("data-rendered", "30")
        await no_horizontal_overflow(page)
        await screenshot(page, "vending-phone-machine")
        await page.go_back()
        await page.wait_for_url(f"{base}/vending/routes")

        await page.locator(f'[data-order="{fleet.order}"]').tap()
        await page.wait_for_url(f"{base}/service-orders/{fleet.order}")
        await expect(page.locator("[data-order-state]")).to_have_text("issued")
        await expect(page.locator("details.pick-totals")).to_have_attribute("open", "")
        await page.get_by_role("button", name="Start").tap()
        await expect(page.locator("[data-order-state]")).to_have_text("in progress")
        await no_horizontal_overflow(page)
        assert await small_targets(page) == []
        await screenshot(page, "vending-phone-pick-list")

        # A1: two more than planned (2 -> 4).
        a1 = page.locator('[data-slot="A1"]')
        await a1.get_by_role("button", name="One more in A1").tap()
        await a1.get_by_role("button", name="One more in A1").tap()
        await expect(a1.get_by_label("Filled in A1")).to_have_value("4")
        await a1.get_by_role("button", name="Filled").tap()
        await expect(a1.locator("[data-filled]")).to_have_text("4")
        # A2: found sold out, one fewer than planned (6 -> 5).
        a2 = page.locator('[data-slot="A2"]')
        await a2.get_by_role("button", name="One less in A2").tap()
        await a2.get_by_label("Sold out").tap()
        await a2.get_by_role("button", name="Filled").tap()
        await expect(a2.locator("[data-filled]")).to_have_text("5")
        await expect(a2.locator("[data-recorded]")).to_contain_text("was sold out")
        # A3: as planned.
        a3 = page.locator('[data-slot="A3"]')
        await a3.get_by_role("button", name="Filled").tap()
        await expect(a3.locator("[data-filled]")).to_have_text("10")
        cash = page.locator(f"#cash-{fleet.machine}")
        await cash.get_by_label("Cash collected").fill("12.50")
        await cash.get_by_role("button", name="Save cash").tap()
        await expect(page.locator("[data-cash-recorded]")).to_have_text("Recorded 12.50")
        await no_horizontal_overflow(page)
        assert await small_targets(page) == []
        await screenshot(page, "vending-phone-filled")

        await page.get_by_role("button", name="Complete").tap()
        await expect(page.locator("[data-order-state]")).to_have_text("completed")
        await expect(page.locator(".fill-form")).to_have_count(0)
        console.assert_none()
    finally:
        await context.close()

    async with live_database.session() as session:
        order = await session.get_one(ServiceOrder, fleet.order)
        assert order.state == "completed"
        assert order.driver_id == org.user_ids[Role.DRIVER]
        lines = {
            line.slot: line
            for line in await session.scalars(select(PickLine).where(PickLine.order_id == order.id))
        }
        assert {s: (line.filled, line.sold_out) for s, line in lines.items()} == {
            "A1": (4, False),
            "A2": (5, True),
            "A3": (10, False),
        }
        stock = {
            s.slot: s
            for s in await session.scalars(
                select(SlotStock).where(SlotStock.cabinet_id == fleet.cabinet)
            )
        }
        # The estimate before the visit plus the fill, capped at capacity; nothing sold since.
        assert {s: (row.fill_level, row.sold_since_fill) for s, row in stock.items()} == {
            "A1": (10, 0),  # 6 left + 4
            "A2": (5, 0),  # found empty + 5
            "A3": (10, 0),  # unknown, counted as empty + 10
        }
        assert all(row.sold_out_at is None for row in stock.values())
        visit = await session.get_one(
            ServiceVisit, {"order_id": order.id, "device_id": fleet.machine}
        )
        assert visit.cash_collected == Decimal("12.50")
        assert visit.serviced_at is not None
    # The same order through the REST API, as the driver.
    async with local_client(base_url=base) as http:
        answer = await http.get(
            f"/api/v1/vending/service-orders/{fleet.order}", headers=org.headers(Role.DRIVER)
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "completed"
    assert uuid.UUID(answer.json()["id"]) == fleet.order
