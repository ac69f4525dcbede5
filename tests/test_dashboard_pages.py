"""Dashboard pages over HTTP: sign-in redirects, roles, CSRF on page writes, filters."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from tests.conftest import client_for
from tests.support.devices import new_device
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

PAGES = ("/dashboard", "/devices", "/profiles", "/assets", "/dead-letters", "/users", "/api-keys")


@asynccontextmanager
async def browser_like(
    app: FastAPI, tenant: Tenant, role: Role
) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie of the tenant's user with `role`."""
    async with client_for(app) as http:
        http.cookies.set(SESSION_COOKIE, tenant.tokens[role])
        yield http


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def test_pages_need_a_sign_in(client: httpx.AsyncClient) -> None:
    for path in (*PAGES, f"/devices/{uuid.uuid4()}", "/audit"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == f"/auth/login?next={path}"


async def test_an_admin_sees_every_page_and_the_admin_links(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, _ = await new_device(client, tenant, name="Boiler")
    async with browser_like(app, tenant, Role.ADMIN) as http:
        for path in (*PAGES, "/audit", f"/devices/{device_id}"):
            answer = await http.get(path)
            assert answer.status_code == 200, (path, answer.text[:300])
            assert answer.headers["content-type"].startswith("text/html")
            assert 'href="/users"' in answer.text
            assert "cdn" not in answer.text.lower()  # every asset is served from /static
        audit = await http.get("/audit", params={"action": "device.create"})
        assert "device.create" in audit.text


async def test_a_viewer_gets_no_write_controls_and_no_admin_pages(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, _ = await new_device(client, tenant)
    async with browser_like(app, tenant, Role.VIEWER) as http:
        page = await http.get(f"/devices/{device_id}")
        assert page.status_code == 200
        assert "command-form" not in page.text
        assert 'href="/users"' not in page.text
        for path in ("/users", "/api-keys", "/audit"):
            refused = await http.get(path)
            assert refused.status_code == 403, path
            assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
        write = await http.post(
            f"/devices/{device_id}/commands",
            headers={"X-CSRF-Token": csrf_of(page)},
            data={"method": "reboot"},
        )
        assert write.status_code == 403
        assert write.json()["error"]["code"] == "PERMISSION_DENIED"


async def test_page_writes_need_the_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device_id, _ = await new_device(client, tenant)
    async with browser_like(app, tenant, Role.OPERATOR) as http:
        page = await http.get(f"/devices/{device_id}")
        assert "command-form" in page.text
        csrf = csrf_of(page)
        missing = await http.post(f"/devices/{device_id}/commands", data={"method": "reboot"})
        assert missing.status_code == 403
        assert missing.json()["error"]["code"] == "CSRF_FAILED"
        forged = await http.post(
            f"/devices/{device_id}/commands",
            headers={"X-CSRF-Token": csrf[:-2] + "xx"},
            data={"method": "reboot"},
        )
        assert forged.status_code == 403
        # The form field works as well as the header (forms without JavaScript).
        sent = await http.post(
            f"/devices/{device_id}/commands",
            data={"method": "reboot", "params": '{"delay_s": 5}', "csrf_token": csrf},
        )
        assert sent.status_code == 201, sent.text
        assert "<code>reboot</code>" in sent.text
        assert "device offline" in sent.text  # not persistent, nobody listening
        queued = await http.post(
            f"/devices/{device_id}/commands",
            headers={"X-CSRF-Token": csrf},
            data={"method": "reboot", "persistent": "1"},
        )
        assert "data-command-status>queued<" in queued.text
    listed = await client.get(
        f"/api/v1/devices/{device_id}/commands", headers=tenant.headers(Role.VIEWER)
    )
    assert [c["status"] for c in listed.json()["items"]] == ["queued", "failed"]
    async with browser_like(app, other_tenant, Role.OPERATOR) as http:
        page = await http.get("/dashboard")
        stranger = await http.post(
            f"/devices/{device_id}/commands",
            headers={"X-CSRF-Token": csrf_of(page)},
            data={"method": "reboot"},
        )
        assert stranger.status_code == 404
        assert (await http.get(f"/devices/{device_id}")).status_code == 404


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"method": "reboot", "params": "{nope"}, "INVALID_PARAMS"),
        ({"method": "reboot", "params": "[1, 2]"}, "VALIDATION_ERROR"),
        ({"method": ""}, "VALIDATION_ERROR"),
        ({"method": "reboot", "timeout_s": "0"}, "VALIDATION_ERROR"),
        ({"method": "reboot", "timeout_s": "soon"}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_command_forms_are_4xx(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, fields: dict[str, str], code: str
) -> None:
    device_id, _ = await new_device(client, tenant)
    async with browser_like(app, tenant, Role.OPERATOR) as http:
        csrf = csrf_of(await http.get("/dashboard"))
        answer = await http.post(
            f"/devices/{device_id}/commands", headers={"X-CSRF-Token": csrf}, data=fields
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == code


async def test_device_list_filters_searches_and_pages(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for n in range(30):
        await new_device(
            client, tenant, name=f"pump-{n:02d}", labels=["even"] if n % 2 == 0 else []
        )
    await new_device(client, tenant, name="Freezer 7", serial_number="FZ-0007")
    async with browser_like(app, tenant, Role.VIEWER) as http:
        first = await http.get("/devices")
        assert first.text.count('href="/devices/') == 25
        more = re.search(r'href="(/devices\?[^"]*cursor=[^"]+)"', first.text)
        assert more
        second = await http.get(more.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"})
        assert "<html" not in second.text  # htmx asked for the rows alone
        assert second.text.count("pump-") == 6
        found = await http.get("/devices", params={"q": "fz-00"})
        assert "Freezer 7" in found.text
        assert "pump-" not in found.text
        labelled = await http.get("/devices", params={"label": "even"})
        assert labelled.text.count("pump-") == 15
        assert (await http.get("/devices", params={"profile": "x"})).status_code == 422


async def test_the_dashboard_counts_presence_ingest_and_events(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    talking, token = await new_device(live_client, live_tenant, name="Talker")
    await new_device(live_client, live_tenant, name="Silent")
    now = int(time.time() * 1000)
    readings = [{"ts": now - i * 1000, "values": {"t": i, "h": i}} for i in range(30)]
    device = {"X-Device-Token": token}
    stored = await live_client.post("/api/v1/devices/me/telemetry", headers=device, json=readings)
    assert stored.status_code == 200, stored.text
    event = await live_client.post(
        "/api/v1/devices/me/events", headers=device, json={"type": "door_open", "severity": "major"}
    )
    assert event.status_code == 201, event.text
    async with browser_like(live_app, live_tenant, Role.VIEWER) as http:

        async def counted() -> bool:
            page = (await http.get("/dashboard")).text
            return '<p class="big" data-count="online">1</p>' in page

        await wait_until(counted)  # presence is written from its own queue
        page = (await http.get("/dashboard")).text
    assert '<p class="big" data-count="never">1</p>' in page
    assert '<p class="big" data-count="offline">0</p>' in page
    assert '<p class="big">12.0</p>' in page  # 60 readings in the last five minutes
    assert f'<a href="/devices/{talking}">Talker</a>' in page
    assert "door_open" in page
