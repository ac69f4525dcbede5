"""Finding 9: security headers on pages, HSTS and a Secure cookie in production, and the
Content-Security-Policy proven in Chromium (the dashboard's own scripts run, an injected
inline script does not)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import Browser, expect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.browser import new_page, sign_in
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, make_tenant

EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


async def test_every_kind_of_response_carries_the_headers(client: httpx.AsyncClient) -> None:
    for path in ("/auth/login", "/api/docs", "/health", "/api/v1/devices", "/static/js/app.js"):
        response = await client.get(path)
        for name, value in EXPECTED.items():
            assert response.headers.get(name) == value, (path, name)
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "strict-transport-security" not in response.headers  # not in production


async def test_production_adds_hsts_and_a_secure_session_cookie(
    db: Database, tmp_path: Path
) -> None:
    """Over plain HTTP too (a TLS proxy that does not say so): the cookie is Secure."""
    async with running_app(db, tmp_path, environment="production") as app, client_for(app) as http:
        tenant = await make_tenant(http, db)
        form = await http.get("/auth/login")
        assert "max-age=" in form.headers["strict-transport-security"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        login_cookie = _set_cookie(form, "fleetcore_login_csrf")
        assert "Secure" in login_cookie
        signed_in = await http.post(
            "/auth/login",
            data={
                "email": tenant.emails[Role.VIEWER],
                "password": PASSWORD,
                "csrf_token": token.group(1),
            },
            # A browser sends a Secure cookie only over HTTPS; this client is told to.
            headers={"Cookie": login_cookie.split(";", 1)[0]},
        )
        assert signed_in.status_code == 303, signed_in.text
        session_cookie = _set_cookie(signed_in, "fleetcore_session")
        assert "Secure" in session_cookie
        assert "HttpOnly" in session_cookie


def _set_cookie(response: httpx.Response, name: str) -> str:
    return next(
        value
        for header, value in response.headers.multi_items()
        if header == "set-cookie" and value.startswith(f"{name}=")
    )


async def test_the_policy_holds_in_chromium(
    browser: Browser, live_database: Database, tmp_path: Path
) -> None:
    async with (
        running_app(live_database, tmp_path) as app,
        serving(app) as address,
        client_for(app) as http,
    ):
        tenant = await make_tenant(http, live_database)
        base = f"http://{address}"
        context = await browser.new_context()
        try:
            page, console = await new_page(context)
            # The API docs start Swagger UI from a file: it renders under the policy.
            await page.goto(f"{base}/api/docs")
            await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Fleetcore")
            await sign_in(page, base, tenant.emails[Role.ADMIN], PASSWORD)
            await expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
            console.assert_none()  # nothing of ours was refused by the policy
            # What an injected script would be: refused, and the browser says why.
            ran = await page.evaluate(
                """() => new Promise((resolve) => {
                    document.addEventListener('securitypolicyviolation',
                        (e) => resolve('refused:' + e.violatedDirective), {once: true});
                    const s = document.createElement('script');
                    s.textContent = 'window.__injected = true';
                    document.body.appendChild(s);
                    setTimeout(() => resolve(window.__injected ? 'ran' : 'silent'), 2000);
                })"""
            )
            assert ran.startswith("refused:script-src"), ran
            assert await page.evaluate("() => window.__injected === undefined")
        finally:
            await context.close()
