"""Debian's Chromium driven by Playwright, and what a page test checks on every page.

Also a pytest plugin (tests/conftest.py loads it) with the browser tests' fixtures: `browser`
(one Chromium per test worker), `site` (the app on the live database served by a real
uvicorn) and `context` (a desktop-sized browser context). A module that uses `site` also
overrides the root `http` and `org` fixtures to talk to the served app, not mqtt_app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from fleetcore.db import Database
from tests.conftest import running_app
from tests.support.serving import serving

CHROMIUM = "/usr/bin/chromium"  # from Debian (scripts/system-deps.sh); never `playwright install`
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the duration of the block."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class ConsoleErrors:
    """Console errors and uncaught exceptions of a page; a test asserts there are none."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def assert_none(self) -> None:
        """Fail naming every error seen so far."""
        assert self.errors == [], self.errors


async def new_page(context: BrowserContext) -> tuple[Page, ConsoleErrors]:
    """A page of the context, its console watched."""
    page = await context.new_page()
    return page, ConsoleErrors(page)


async def screenshot(page: Page, name: str) -> None:
    """Save a full-page screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(f"{base_url}/dashboard")
    await page.wait_for_url(lambda url: "/auth/login?next=" in url)
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/dashboard")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the test worker (each test has a context of its own):
    a launch costs ~1.2 CPU-s, and about a dozen modules use it."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def site(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    """The app on the live database, its lifespan running, served by uvicorn: (app, base URL)."""
    async with running_app(live_database, tmp_path) as application, serving(application) as url:
        yield application, f"http://{url}"


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A desktop-sized browser context, closed after the test."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        await ctx.close()
