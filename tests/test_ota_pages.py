"""OTA pages over HTTP on both databases: what each role sees and may do, the upload form
(CSRF, refusals shown beside it), package deletion refused under a rollout, signing keys,
the rollout form and page, and the device page's firmware and update history."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.devices import new_device
from tests.support.tenants import Tenant, make_tenant
from tests.test_dashboard_pages import browser_like, csrf_of

HX = {"HX-Request": "true"}


# An upload commits in two steps (the checks, then the stored package): pages run on a live
# database, as tests/test_ota.py does, not inside one rolled-back test transaction.
@pytest.fixture
def app(live_app: FastAPI) -> FastAPI:
    return live_app


@pytest.fixture
def client(live_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return live_client


@pytest.fixture
def tenant(live_tenant: Tenant) -> Tenant:
    return live_tenant


@pytest.fixture
async def other_tenant(client: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(client, live_database)


async def api_upload(
    client: httpx.AsyncClient, tenant: Tenant, *, title: str = "sensor-fw", version: str = "1.0"
) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/ota/packages",
        headers=tenant.headers(Role.MANAGER),
        data={"title": title, "version": version, "kind": "firmware"},
        files={"file": ("fw.bin", b"firmware bytes " * 100, "application/octet-stream")},
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def api_rollout(
    client: httpx.AsyncClient, tenant: Tenant, package_id: str, device_ids: list[str]
) -> dict[str, Any]:
    answer = await client.post(
        "/api/v1/ota/rollouts",
        headers=tenant.headers(Role.MANAGER),
        json={
            "package_id": package_id,
            "target": {"device_ids": device_ids},
            "strategy": {"type": "staged", "stages": [50, 100], "unit": "percent"},
        },
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def buttons(html: str) -> list[str]:
    """The rollout actions the page offers (their form actions)."""
    return re.findall(r'action="/ota/rollouts/[0-9a-f-]+/(\w+)"', html)


async def test_a_viewer_sees_updates_without_controls_and_is_refused_writes(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    package = await api_upload(client, tenant)
    device_id, _ = await new_device(client, tenant, name="Sensor 1")
    rollout = await api_rollout(client, tenant, package["id"], [device_id])
    async with browser_like(app, tenant, Role.VIEWER) as http:
        page = await http.get("/ota")
        assert page.status_code == 200, page.text[:500]
        assert 'href="/ota" aria-current="page"' in page.text  # in the navigation
        assert "sensor-fw" in page.text
        assert package["checksum"][:12] in page.text
        assert f'href="/ota/rollouts/{rollout["id"]}"' in page.text
        for control in ('action="/ota/packages"', "/delete", 'action="/ota/keys"', "New rollout"):
            assert control not in page.text, control
        detail = await http.get(f"/ota/rollouts/{rollout['id']}")
        assert detail.status_code == 200
        assert buttons(detail.text) == []
        assert "Sensor 1" in detail.text
        assert (await http.get("/ota/rollouts/new")).status_code == 403
        csrf = {"X-CSRF-Token": csrf_of(page)}
        writes = [
            ("/ota/packages", {"files": {"file": ("x.bin", b"x")}, "data": {"title": "x"}}),
            (f"/ota/packages/{package['id']}/delete", {}),
            ("/ota/keys", {"data": {"name": "k", "public_key": "x" * 44}}),
            ("/ota/rollouts", {"data": {"package_id": package["id"]}}),
            *((f"/ota/rollouts/{rollout['id']}/{a}", {}) for a in ("pause", "abort", "rollback")),
        ]
        for url, extra in writes:
            refused = await http.post(url, headers={**csrf, **HX}, **extra)
            assert refused.status_code == 403, (url, refused.text[:300])
            assert refused.json()["error"]["code"] == "PERMISSION_DENIED", url
    listed = await client.get("/api/v1/ota/packages", headers=tenant.headers())
    assert len(listed.json()["items"]) == 1
    state = await client.get(f"/api/v1/ota/rollouts/{rollout['id']}", headers=tenant.headers())
    assert state.json()["status"] == "active"


async def test_each_role_gets_the_buttons_it_may_use(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    package = await api_upload(client, tenant)
    device_id, _ = await new_device(client, tenant)
    rollout = await api_rollout(client, tenant, package["id"], [device_id])
    url = f"/ota/rollouts/{rollout['id']}"
    async with browser_like(app, tenant, Role.OPERATOR) as http:
        page = await http.get(url)
        assert buttons(page.text) == ["pause"]
        paused = await http.post(f"{url}/pause", headers={"X-CSRF-Token": csrf_of(page), **HX})
        assert paused.status_code == 200, paused.text
        assert buttons(paused.text) == ["resume"]
        assert "Paused: paused by hand" in paused.text
        refused = await http.post(f"{url}/abort", headers={"X-CSRF-Token": csrf_of(page), **HX})
        assert refused.status_code == 403
        again = await http.post(f"{url}/pause", headers={"X-CSRF-Token": csrf_of(page), **HX})
        assert again.status_code == 409  # flashed by the page: the envelope's message
        assert again.json()["error"]["message"] == "the rollout is not active"
    async with browser_like(app, tenant, Role.MANAGER) as http:
        page = await http.get(url)
        assert buttons(page.text) == ["resume", "abort", "rollback"]
        overview = await http.get("/ota")
        assert 'action="/ota/packages"' in overview.text  # the upload form
        assert 'action="/ota/keys"' not in overview.text  # keys are for admins
        # A plain form post (no JavaScript): the token in the body, a redirect back.
        resumed = await http.post(f"{url}/resume", data={"csrf_token": csrf_of(page)})
        assert resumed.status_code == 303
        assert resumed.headers["location"] == url
        aborted = await http.post(f"{url}/abort", headers={"X-CSRF-Token": csrf_of(page), **HX})
        assert buttons(aborted.text) == ["rollback"]
    async with browser_like(app, tenant, Role.ADMIN) as http:
        assert 'action="/ota/keys"' in (await http.get("/ota")).text


async def test_upload_form_needs_csrf_and_shows_refusals(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    fields = {"title": "gateway-fw", "version": "2.1", "kind": "firmware"}
    files = {"file": ("gw.bin", b"\x00\x01" * 5000, "application/octet-stream")}
    async with browser_like(app, tenant, Role.MANAGER) as http:
        csrf = csrf_of(await http.get("/ota"))
        missing = await http.post("/ota/packages", data=fields, files=files)
        assert missing.status_code == 403
        assert missing.json()["error"]["code"] == "CSRF_FAILED"
        forged = await http.post(
            "/ota/packages", headers={"X-CSRF-Token": "forged", **HX}, data=fields, files=files
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "CSRF_FAILED"
        bad = await http.post(
            "/ota/packages",
            headers={"X-CSRF-Token": csrf, **HX},
            data={**fields, "version": "not a version!"},
            files=files,
        )
        assert bad.status_code == 422
        error = re.search(r"data-upload-error><p>([^<]*)<", bad.text)
        assert error, bad.text[:500]
        assert error.group(1).startswith("version:")
        assert 'value="gateway-fw"' in bad.text  # what was typed stays
        not_multipart = await http.post(
            "/ota/packages", headers={"X-CSRF-Token": csrf, **HX}, data=fields
        )
        assert not_multipart.status_code == 422
        assert "data-upload-error><p>send the package as multipart/form-data" in not_multipart.text
        other_part = await http.post(
            "/ota/packages",
            headers={"X-CSRF-Token": csrf, **HX},
            data=fields,
            files={"firmware": ("gw.bin", b"x")},
        )
        assert other_part.status_code == 422
        assert "send the package as the one file part" in other_part.text
        stored = await http.post(
            "/ota/packages", headers={"X-CSRF-Token": csrf, **HX}, data=fields, files=files
        )
        assert stored.status_code == 200, stored.text[:500]
        assert "Stored firmware gateway-fw 2.1." in stored.text
        assert "9.8 KiB" in stored.text  # 10000 bytes
        # Without JavaScript: the token as a form field, then back to the page.
        plain = await http.post(
            "/ota/packages",
            data={**fields, "version": "2.2", "csrf_token": csrf},
            files=files,
        )
        assert plain.status_code == 303
        duplicate = await http.post(
            "/ota/packages",
            headers={"X-CSRF-Token": csrf, "Accept": "text/html"},
            data=fields,
            files=files,
        )
        assert duplicate.status_code == 409
        assert "version &#39;2.1&#39; exists already" in duplicate.text
        assert "<h1>Over-the-air updates</h1>" in duplicate.text  # the whole page again
    listed = await client.get("/api/v1/ota/packages", headers=tenant.headers())
    assert sorted(p["version"] for p in listed.json()["items"]) == ["2.1", "2.2"]


async def test_a_package_under_a_rollout_is_not_deleted_and_says_why(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    package = await api_upload(client, tenant)
    device_id, _ = await new_device(client, tenant)
    rollout = await api_rollout(client, tenant, package["id"], [device_id])
    async with browser_like(app, tenant, Role.MANAGER) as http:
        csrf = {"X-CSRF-Token": csrf_of(await http.get("/ota"))}
        refused = await http.post(f"/ota/packages/{package['id']}/delete", headers={**csrf, **HX})
        assert refused.status_code == 409
        message = re.search(r"data-package-error><p>(.*?)</p>", refused.text)
        assert message, refused.text[:500]
        assert "sensor-fw 1.0 was not deleted: an active rollout uses this package" in (
            message.group(1)
        )
        assert f'href="/ota/rollouts/{rollout["id"]}"' in message.group(1)
        assert f'data-package-id="{package["id"]}"' in refused.text  # still listed
        await http.post(f"/ota/rollouts/{rollout['id']}/abort", headers={**csrf, **HX})
        deleted = await http.post(f"/ota/packages/{package['id']}/delete", headers={**csrf, **HX})
        assert deleted.status_code == 200
        assert "Deleted sensor-fw 1.0." in deleted.text
        assert f'data-package-id="{package["id"]}"' not in deleted.text
    gone = await client.get(f"/api/v1/ota/packages/{package['id']}", headers=tenant.headers())
    assert gone.status_code == 404


async def test_signing_keys_from_the_page(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    pem = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    async with browser_like(app, tenant, Role.ADMIN) as http:
        csrf = {"X-CSRF-Token": csrf_of(await http.get("/ota"))}
        bad = await http.post(
            "/ota/keys", headers={**csrf, **HX}, data={"name": "ci", "public_key": "A" * 60}
        )
        assert bad.status_code == 422
        assert "public_key must be an Ed25519 public key" in bad.text
        empty = await http.post("/ota/keys", headers={**csrf, **HX}, data={"name": ""})
        assert empty.status_code == 422
        assert "data-key-error" in empty.text
        added = await http.post(
            "/ota/keys", headers={**csrf, **HX}, data={"name": "ci", "public_key": pem}
        )
        assert added.status_code == 200, added.text[:500]
        assert "Key registered." in added.text
        key_id = re.search(r'data-key-id="([^"]+)"', added.text)
        assert key_id
        twice = await http.post(
            "/ota/keys", headers={**csrf, **HX}, data={"name": "again", "public_key": pem}
        )
        assert twice.status_code == 409
        assert "registered already" in twice.text
        removed = await http.post(f"/ota/keys/{key_id.group(1)}/delete", headers={**csrf, **HX})
        assert removed.status_code == 200
        assert "data-key-id" not in removed.text
    async with browser_like(app, tenant, Role.MANAGER) as http:
        csrf = {"X-CSRF-Token": csrf_of(await http.get("/ota"))}
        refused = await http.post(
            "/ota/keys", headers={**csrf, **HX}, data={"name": "ci", "public_key": pem}
        )
        assert refused.status_code == 403
    keys = await client.get("/api/v1/ota/keys", headers=tenant.headers())
    assert keys.json() == []


async def test_the_rollout_form_and_page(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    package = await api_upload(client, tenant)
    first, _ = await new_device(client, tenant, name="Pump A")
    second, _ = await new_device(client, tenant, name="Pump B")
    form = {
        "package_id": package["id"],
        "name": "pumps to 1.0",
        "target_type": "devices",
        "device_ids": [first, second],
        "strategy": "staged",
        "stages": "50, 100",
        "unit": "percent",
        "pause_s": "0",
        "max_failure_percent": "50",
    }
    async with browser_like(app, tenant, Role.MANAGER) as http:
        blank = await http.get(f"/ota/rollouts/new?package={package['id']}")
        assert blank.status_code == 200
        assert f'<option value="{package["id"]}" selected>' in blank.text
        csrf = csrf_of(blank)
        refusals = [
            ({**form, "stages": "10, 50"}, "percent stages rise and end at 100"),
            ({**form, "stages": "ten"}, "stages: whole numbers"),
            ({**form, "device_ids": []}, "give exactly one of"),
            ({**form, "device_ids": [str(uuid.uuid4())]}, "device not found"),
        ]
        for fields, expected in refusals:
            answer = await http.post("/ota/rollouts", data={**fields, "csrf_token": csrf})
            assert answer.status_code in (404, 422), (expected, answer.status_code)
            errors = answer.text[answer.text.index("data-rollout-errors") :].split("</div>")[0]
            assert expected in errors, (expected, errors)
            assert 'value="pumps to 1.0"' in answer.text  # the form keeps what was typed
        started = await http.post("/ota/rollouts", data={**form, "csrf_token": csrf})
        assert started.status_code == 303, started.text[:500]
        url = started.headers["location"]
        busy = await http.post("/ota/rollouts", data={**form, "csrf_token": csrf})
        assert busy.status_code == 409
        assert "in another open firmware rollout" in busy.text
        page = await http.get(url)
    assert page.status_code == 200
    html = page.text
    assert "pumps to 1.0" in html
    assert "Stage</dt><dd data-current-stage>1 of 2" in html
    assert "staged: 50, 100 %" in html
    assert "50.0 %" in html  # the failure limit
    assert re.search(r'data-state-bar="queued"[^>]*>1 of 2<', html)
    assert re.search(r'data-stage-bar="0"[^>]*>0 of 1<', html)
    assert html.count("data-device-row=") == 2
    assert "Pump A" in html
    assert "Pump B" in html
    for part, marker in (("head", "data-rollout-head"), ("progress", "data-rollout-progress")):
        async with browser_like(app, tenant, Role.VIEWER) as http:
            fragment = await http.get(f"{url}?part={part}", headers=HX)
        assert fragment.status_code == 200
        assert marker in fragment.text
        assert "<html" not in fragment.text


async def test_the_device_page_shows_versions_and_update_history(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    old = await api_upload(client, tenant, version="0.9")
    new = await api_upload(client, tenant, version="1.0")
    device_id, token = await new_device(client, tenant)
    earlier = await api_rollout(client, tenant, old["id"], [device_id])
    await client.post(
        f"/api/v1/ota/rollouts/{earlier['id']}/abort", headers=tenant.headers(Role.MANAGER)
    )
    later = await api_rollout(client, tenant, new["id"], [device_id])
    reported = await client.post(
        "/api/v1/devices/me/attributes",
        headers={"X-Device-Token": token},
        json={"current_fw_title": "sensor-fw", "current_fw_version": "0.8", "fw_state": "UPDATING"},
    )
    assert reported.status_code == 200
    async with browser_like(app, tenant, Role.VIEWER) as http:
        page = await http.get(f"/devices/{device_id}")
        card = await http.get(f"/ota/devices/{device_id}/updates")  # its live refresh
    assert page.status_code == 200
    html = page.text
    assert card.status_code == 200
    assert card.text.startswith(
        f'<section class="card" aria-labelledby="updates-h" data-device-updates="{device_id}"'
    )
    # The card alone holds what the page's card holds (not byte for byte: the rollout job
    # may touch a row's time between the two requests).
    for text in (card.text, html):
        firmware = text[text.index('data-versions="firmware"') :].split("</tr>")[0]
        assert "sensor-fw <code>0.8</code>" in firmware  # running
        assert "sensor-fw <code>1.0</code>" in firmware  # assigned
        assert ">UPDATING<" in firmware
        rows = re.findall(r'data-history-rollout="([^"]+)"', text)
        assert rows == [later["id"], earlier["id"]]  # newest first
    software = html[html.index('data-versions="software"') :].split("</tr>")[0]
    assert "not reported" in software
    first_row = html[html.index(f'data-history-rollout="{later["id"]}"') :].split("</tr>")[0]
    assert "<code>1.0</code>" in first_row
    aborted = html[html.index(f'data-history-rollout="{earlier["id"]}"') :].split("</tr>")[0]
    assert "cancelled" in aborted
    assert "aborted" in aborted


async def test_another_organization_sees_nothing(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    package = await api_upload(client, tenant)
    device_id, _ = await new_device(client, tenant)
    rollout = await api_rollout(client, tenant, package["id"], [device_id])
    async with browser_like(app, other_tenant, Role.ADMIN) as http:
        page = await http.get("/ota")
        assert page.status_code == 200
        assert "sensor-fw" not in page.text
        csrf = {"X-CSRF-Token": csrf_of(page), **HX}
        url = f"/ota/rollouts/{rollout['id']}"
        for answer in (
            await http.get(url),
            await http.get(f"{url}?part=progress"),
            await http.get(f"/ota/devices/{device_id}/updates"),
            await http.post(f"{url}/pause", headers=csrf),
            await http.post(f"/ota/packages/{package['id']}/delete", headers=csrf),
        ):
            assert answer.status_code == 404
    state = await client.get(f"/api/v1/ota/rollouts/{rollout['id']}", headers=tenant.headers())
    assert state.json()["status"] == "active"
