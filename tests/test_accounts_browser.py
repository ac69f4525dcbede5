"""Accounts end to end in headless Chromium: a new organization signs up and verifies, invites
a colleague who accepts and lands signed in, and the colleague resets a password; every mail
read from a real SMTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from playwright.async_api import BrowserContext, expect

from fleetcore.db import Database
from tests.conftest import running_app
from tests.support.account_mail import link_of, wait_mail
from tests.support.browser import new_page, screenshot
from tests.support.serving import serving
from tests.support.smtp import Mailbox, smtp_server

expect.set_options(timeout=10_000)
FOUNDER, COLLEAGUE = "founder@acme.example.com", "colleague@acme.example.com"
PASSWORD, COLLEAGUE_PASSWORD, NEW_PASSWORD = (
    "founder passphrase 1",
    "colleague passphrase 1",
    "colleague passphrase 2",
)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
async def site(
    live_database: Database, tmp_path: Path, mailbox: Mailbox
) -> AsyncIterator[tuple[FastAPI, str]]:
    """The app with sign-up open and mail to the test SMTP server, served by uvicorn."""
    settings = {
        "signup": "open",
        "smtp_host": "127.0.0.1",
        "smtp_port": mailbox.port,
        "smtp_starttls": False,
    }
    async with running_app(live_database, tmp_path, **settings) as app, serving(app) as url:
        yield app, f"http://{url}"


async def test_sign_up_verify_invite_accept_and_reset_through_the_pages(
    site: tuple[FastAPI, str], mailbox: Mailbox, context: BrowserContext
) -> None:
    _, base = site
    page, console = await new_page(context)

    # A new organization signs up.
    await page.goto(f"{base}/auth/login")
    await page.get_by_role("link", name="Create an organization").click()
    await page.get_by_label("Organization name").fill("Acme Cold Chain")
    await page.get_by_label("Email").fill(FOUNDER)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create organization").click()
    await expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    # ... verifies its address from the mail ...
    await page.goto(link_of(await wait_mail(mailbox, FOUNDER, "signup")))
    await page.get_by_role("button", name="Verify and create").click()
    await expect(page.get_by_role("heading", name="Email verified")).to_be_visible()
    await page.get_by_role("link", name="Sign in").click()
    await page.get_by_label("Email").fill(FOUNDER)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/dashboard")

    # ... and invites a colleague from the users page.
    await page.get_by_role("link", name="Users", exact=True).click()
    await page.get_by_label("Email").fill(COLLEAGUE)
    await page.get_by_label("Role").select_option("operator")
    await page.get_by_role("button", name="Invite").click()
    row = page.locator("table.invitations tbody tr", has_text=COLLEAGUE)
    await expect(row.locator("[data-status]")).to_have_text("pending")
    await screenshot(page, "accounts-invitations")

    # The colleague, in a browser of their own, accepts and lands signed in.
    colleague = await context.browser.new_context()  # type: ignore[union-attr]
    try:
        other, other_console = await new_page(colleague)
        await other.goto(link_of(await wait_mail(mailbox, COLLEAGUE, "invite")))
        await other.get_by_label("New password").fill(COLLEAGUE_PASSWORD)
        await other.get_by_role("button", name="Set password").click()
        await other.wait_for_url(f"{base}/dashboard")
        await expect(other.get_by_role("heading", name="Dashboard")).to_be_visible()

        # The colleague forgets the password and resets it: the session they had ends.
        await other.goto(f"{base}/auth/login")
        await other.get_by_role("link", name="Forgot your password?").click()
        await other.get_by_label("Email").fill(COLLEAGUE)
        await other.get_by_role("button", name="Send the link").click()
        await expect(other.get_by_role("heading", name="Check your email")).to_be_visible()
        await other.goto(link_of(await wait_mail(mailbox, COLLEAGUE, "reset")))
        await other.get_by_label("New password").fill(NEW_PASSWORD)
        await other.get_by_role("button", name="Change password").click()
        await expect(other.get_by_role("heading", name="Password changed")).to_be_visible()
        await other.goto(f"{base}/dashboard")  # the session cookie they still hold has ended
        await other.wait_for_url(lambda url: "/auth/login?next=" in url)
        await other.get_by_label("Email").fill(COLLEAGUE)
        await other.get_by_label("Password").fill(NEW_PASSWORD)
        await other.get_by_role("button", name="Sign in").click()
        await other.wait_for_url(f"{base}/dashboard")
        other_console.assert_none()
    finally:
        await colleague.close()

    await page.reload()
    await expect(row.locator("[data-status]")).to_have_text("accepted")
    console.assert_none()
