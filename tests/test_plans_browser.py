"""The plan page in headless Chromium: a superuser puts an organization on a plan from the
page, and that organization's admin sees the plan and its use on theirs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page, expect

from fleetcore.auth import users
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import UserIn
from fleetcore.db import Database
from tests.support.browser import new_page, screenshot
from tests.support.devices import new_device
from tests.support.tenants import PASSWORD, Tenant, login, make_tenant

expect.set_options(timeout=10_000)


@pytest.fixture
async def http(site: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=site[1]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def _superuser(live_database: Database) -> str:
    email = f"root-{uuid.uuid4().hex[:8]}@platform.example.com"
    async with live_database.session(write=True) as session:
        await users.create_user(
            session,
            None,
            data=UserIn(email=email, password=PASSWORD, role=Role.ADMIN),
            is_superuser=True,
        )
    return email


async def _sign_in_to_plan(page: Page, base: str, email: str) -> None:
    await page.goto(f"{base}/plan")
    await page.wait_for_url(lambda url: "/auth/login?next=" in url)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/plan")


async def test_superuser_assigns_a_plan_and_the_admin_sees_it(
    site: tuple[FastAPI, str],
    http: httpx.AsyncClient,
    org: Tenant,
    live_database: Database,
    browser: Browser,
    context: BrowserContext,
) -> None:
    _, base = site
    root = await _superuser(live_database)
    token = (await login(http, root))["access_token"]
    plan_name = f"Gold {uuid.uuid4().hex[:4]}"
    created = await http.post(
        "/api/v1/plans",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": plan_name, "max_devices": 5, "max_users": 50},
    )
    assert created.status_code == 201, created.text
    await new_device(http, org)

    # The superuser picks the plan for the organization on the page.
    page, console = await new_page(context)
    await _sign_in_to_plan(page, base, root)
    choice = page.get_by_label(f"Plan of {org.slug}")
    await expect(choice).to_have_value("")  # the default, unlimited
    await choice.select_option(label=plan_name)
    row = page.get_by_role("row").filter(has=choice)
    await row.get_by_role("button", name="Assign").click()
    await page.wait_for_url(f"{base}/plan")
    await expect(page.get_by_label(f"Plan of {org.slug}")).to_have_value(created.json()["id"])
    await screenshot(page, "plans-superuser")
    console.assert_none()
    await page.close()

    # The organization's admin, in a browser of their own, sees the plan and its use.
    admin_context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page, console = await new_page(admin_context)
        await _sign_in_to_plan(page, base, org.emails[Role.ADMIN])
        await expect(page.get_by_role("heading", name=plan_name)).to_be_visible()
        devices = page.get_by_role("row").filter(has_text="devices")
        await expect(devices.get_by_role("cell")).to_have_text(["devices", "1", "5"])
        users_row = page.get_by_role("row").filter(has_text="users")
        await expect(users_row.get_by_role("cell").nth(2)).to_have_text("50")
        await expect(page.get_by_role("heading", name="Organizations' plans")).to_have_count(0)
        await screenshot(page, "plans-admin")
        console.assert_none()
    finally:
        await admin_context.close()
