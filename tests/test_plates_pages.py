"""Plate pages over HTTP, with reads sent through the device API: /plates (filters, paging,
thumbnails, watchlist badges, bad filters said in words), one read, a plate's history, and
/watchlists (role-aware)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from tests.conftest import client_for
from tests.support.devices import new_device
from tests.support.plate_pages import NOW_MS, jpeg, plate_read, send_read_with_image, send_reads
from tests.support.tenants import Tenant

BOX = [120, 200, 180, 60]


@asynccontextmanager
async def signed_in(app: FastAPI, tenant: Tenant, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie of the tenant's user with `role`."""
    async with client_for(app) as http:
        http.cookies.set(SESSION_COOKIE, tenant.tokens[role])
        yield http


def text_of(html: str) -> str:
    """The page's text, tags removed and spaces collapsed, for sentence checks."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def read_ids(html: str) -> list[int]:
    """The reads of a /plates page (or fragment), in order."""
    return [int(i) for i in re.findall(r'data-read-id="(\d+)"', html)]


async def reads_of(client: httpx.AsyncClient, tenant: Tenant) -> list[dict[str, Any]]:
    """The tenant's reads through the API, newest first."""
    answer = await client.get("/api/v1/plates/reads", headers=tenant.headers(Role.VIEWER))
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def seed(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    """Two cameras of the tenant: gate A read three plates, gate B one."""
    gate_a, token_a = await new_device(client, tenant, name="Gate A")
    gate_b, token_b = await new_device(client, tenant, name="Gate B")
    await send_reads(
        client,
        token_a,
        [
            plate_read("กข 1234", ts=NOW_MS - 30_000, bbox=BOX),
            plate_read("AB-123", ts=NOW_MS - 20_000, region=None, confidence=0.81),
            plate_read("7ขค 9981", ts=NOW_MS - 10_000),
        ],
    )
    await send_reads(client, token_b, [plate_read("กข 1234", ts=NOW_MS, camera="exit-1")])
    return {"a": gate_a, "b": gate_b, "token_a": token_a}


async def test_pages_need_a_sign_in_and_are_in_the_navigation(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in ("/plates", "/plates/reads/1", "/plates/history/AB123", "/watchlists"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/dashboard")
        assert '<a href="/plates">Plates</a>' in page.text


async def test_plates_lists_the_organizations_reads_newest_first(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    cams = await seed(client, tenant)
    _, theirs = await new_device(client, other_tenant, name="Their gate")
    await send_reads(client, theirs, [plate_read("ZZ 9999", ts=NOW_MS + 5_000)])
    ours = await reads_of(client, tenant)
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/plates")
    assert page.status_code == 200, page.text
    assert read_ids(page.text) == [r["id"] for r in ours]
    assert len(ours) == 4
    assert [r["plate"] for r in ours] == ["กข 1234", "7ขค 9981", "AB-123", "กข 1234"]
    assert "ZZ 9999" not in page.text
    assert "Their gate" not in page.text
    # Both cameras in the filter, each row linking its device; no image: a placeholder.
    assert f'<option value="{cams["a"]}">Gate A</option>' in page.text
    assert f'href="/devices/{cams["b"]}">Gate B</a>' in page.text
    assert page.text.count("data-no-image") == 4
    assert "/thumbnail" not in page.text
    assert "data-live-plates data-newest" in page.text  # unfiltered: live rows join the top


async def test_filters_are_in_the_address_and_find_a_plate_however_typed(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    cams = await seed(client, tenant)
    ours = await reads_of(client, tenant)
    thai = [r["id"] for r in ours if r["plate"] == "กข 1234"]
    async with signed_in(app, tenant, Role.VIEWER) as http:
        # Thai digits and a dash: the same plate.
        page = await http.get("/plates", params={"q": "กข-๑๒๓๔"})
        assert page.status_code == 200, page.text
        assert read_ids(page.text) == thai
        assert 'value="กข-๑๒๓๔"' in page.text  # the filter as typed stays in the form
        assert "data-newest" not in page.text  # a filtered view does not take live rows
        # Camera (a device id) and exact match.
        page = await http.get("/plates", params={"q": "กข1234", "exact": "1", "camera": cams["b"]})
        assert read_ids(page.text) == thai[:1]
        assert f'<option value="{cams["b"]}" selected>' in page.text
        assert 'name="exact" value="1" checked' in page.text
        # A time window (UTC, as the form's datetime-local gives it).
        page = await http.get(
            "/plates", params={"since": "2000-01-01T00:00", "until": "2000-01-02T00:00"}
        )
        assert page.status_code == 200
        assert read_ids(page.text) == []
        assert "No plate reads match." in page.text
        # htmx asks for the rows only.
        fragment = await http.get("/plates", params={"q": "AB 123"}, headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        assert "<h1>" not in fragment.text
        assert read_ids(fragment.text) == [r["id"] for r in ours if r["plate"] == "AB-123"]


async def test_bad_filters_are_said_in_words_never_a_failure(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await seed(client, tenant)
    cases = [
        ({"since": "yesterday"}, "since is not a date and time"),
        ({"until": "2026-13-45T99:00"}, "until is not a date and time"),
        ({"camera": "gate-1"}, "camera is not a device id"),
        ({"since": "2026-05-02T00:00", "until": "2026-05-01T00:00"}, "since is after until"),
        ({"q": "X" * 40}, "at most 32 characters"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ]
    async with signed_in(app, tenant, Role.VIEWER) as http:
        for params, message in cases:
            page = await http.get("/plates", params=params, headers={"Accept": "text/html"})
            assert page.status_code == 422, (params, page.text)
            assert "data-filter-error" in page.text, params
            assert message in text_of(page.text), (params, text_of(page.text))
            assert '<form class="filters card plate-filters"' in page.text  # the form is back
            assert read_ids(page.text) == []
        fragment = await http.get(
            "/plates", params={"camera": "nope"}, headers={"HX-Request": "true"}
        )
        assert fragment.status_code == 422
        assert "camera is not a device id" in fragment.text


async def test_next_page_keeps_the_filters(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    _, token = await new_device(client, tenant, name="Busy gate")
    await send_reads(
        client,
        token,
        [plate_read("กข 1234", ts=NOW_MS - i * 60_000, camera=f"lane-{i}") for i in range(60)],
    )
    async with signed_in(app, tenant, Role.VIEWER) as http:
        first = await http.get("/plates", params={"q": "กข1234"})
        assert first.status_code == 200, first.text
        ids = read_ids(first.text)
        assert len(ids) == 50
        link = re.search(r'<a href="(/plates\?[^"]+)"[^>]*>Next page</a>', first.text)
        assert link is not None
        href = link.group(1).replace("&amp;", "&")
        assert "q=%E0%B8%81%E0%B8%821234" in href
        assert "cursor=" in href
        second = await http.get(href)
        more = read_ids(second.text)
        assert len(more) == 10
        assert not set(ids) & set(more)
        assert max(more) < min(ids)
        assert "Next page" not in second.text


async def test_a_read_shows_its_fields_links_and_box(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    cams = await seed(client, tenant)
    ours = await reads_of(client, tenant)
    boxed = next(r for r in ours if r["bbox"] == BOX)
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get(f"/plates/reads/{boxed['id']}")
        assert page.status_code == 200, page.text
        text = text_of(page.text)
        assert "กรุงเทพมหานคร" in text
        assert "93.0%" in text
        assert "x 120, y 200, w 180, h 60 (pixels)" in text
        assert "white car" in text
        assert f'href="/devices/{cams["a"]}" data-device-link>Gate A</a>' in page.text
        assert f"visit {boxed['visit_id']}" in text
        assert 'href="/plates/history/' in page.text
        assert "This read came without an image." in text  # no image: no box drawn on nothing
        assert "<svg" not in page.text
        row = await http.get(f"/plates/reads/{boxed['id']}?part=row")
        assert row.text.strip().startswith(f'<tr data-read-id="{boxed["id"]}">')
    async with signed_in(app, other_tenant, Role.ADMIN) as http:
        theirs = await http.get(f"/plates/reads/{boxed['id']}", headers={"Accept": "text/html"})
        assert theirs.status_code == 404
        assert "กข 1234" not in theirs.text
        missing = await http.get("/plates/reads/0", headers={"Accept": "text/html"})
        assert missing.status_code == 404


async def test_history_of_a_plate_across_cameras(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    cams = await seed(client, tenant)
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/plates/history/กข-1234")
        assert page.status_code == 200, page.text
        assert re.search(r"data-visits>\s*2\s*<", page.text)
        assert re.search(r"data-reads>\s*2\s*<", page.text)
        assert page.text.count("data-camera-row") == 2
        assert f'href="/devices/{cams["a"]}">Gate A</a>' in page.text
        assert f'href="/devices/{cams["b"]}">Gate B</a>' in page.text
        assert page.text.count("data-visit-id") == 2
        assert len(read_ids(page.text)) == 2
        missing = await http.get("/plates/history/QQ0000", headers={"Accept": "text/html"})
        assert missing.status_code == 404


async def test_watchlists_badges_and_roles(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await seed(client, tenant)
    manager = tenant.headers(Role.MANAGER)
    made = await client.post(
        "/api/v1/watchlists", headers=manager, json={"name": "Stolen", "min_confidence": 0.5}
    )
    assert made.status_code == 201, made.text
    list_id = made.json()["id"]
    added = await client.post(
        f"/api/v1/watchlists/{list_id}/entries",
        headers=manager,
        json={"entries": [{"plate": "AB 123", "note": "reported 1 May"}]},
    )
    assert added.status_code in (200, 201), added.text
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/watchlists")
        assert page.status_code == 200, page.text
        assert f'<a href="/watchlists/{uuid.UUID(list_id)}">Stolen</a>' in page.text
        assert re.search(r"data-entry-count>\s*1\s*<", page.text)
        assert "Create watchlist" not in page.text  # viewers read only
        assert 'data-api-method="DELETE"' not in page.text
        detail = await http.get(f"/watchlists/{list_id}")
        assert "AB 123" in detail.text
        assert "reported 1 May" in detail.text
        assert "Add plate" not in detail.text
        # The read of a watched plate carries the list's badge; only it.
        plates = await http.get("/plates", params={"watchlisted": "1"})
        assert plates.text.count("data-watchlist>") == 1
        assert len(read_ids(plates.text)) == 1
        assert "AB-123" in plates.text
    async with signed_in(app, tenant, Role.OPERATOR) as http:
        page = await http.get("/watchlists")  # operators change plates, not lists
        assert "Create watchlist" not in page.text
        assert 'data-api-method="DELETE"' not in page.text
        detail = await http.get(f"/watchlists/{list_id}")
        assert "Add plate" in detail.text
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get("/watchlists")
        assert "Create watchlist" in page.text
        assert f'data-api-url="/api/v1/watchlists/{list_id}" data-api-method="DELETE"' in page.text
        detail = await http.get(f"/watchlists/{list_id}")
        assert "Add plate" in detail.text
        assert 'data-api-method="DELETE"' in detail.text
        fragment = await http.get(f"/watchlists/{list_id}", headers={"HX-Request": "true"})
        assert "<h1>" not in fragment.text
        assert "AB 123" in fragment.text


async def test_a_read_with_an_image_has_a_thumbnail_and_its_box_over_the_image(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    _, token = await new_device(client, tenant, name="Gate C")
    await send_read_with_image(
        client, token, plate_read("AB-123", bbox=BOX, image=True), jpeg(640, 360, BOX)
    )
    (read,) = await reads_of(client, tenant)
    media = read["media_id"]
    assert media is not None
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/plates")
        assert f'src="/api/v1/media/{media}/thumbnail" alt="AB-123" loading="lazy"' in page.text
        assert "data-no-image" not in page.text
        thumb = await http.get(f"/api/v1/media/{media}/thumbnail")
        assert thumb.status_code == 200
        assert thumb.headers["content-type"].startswith("image/")
        detail = await http.get(f"/plates/reads/{read['id']}")
        assert f'src="/api/v1/media/{media}" alt="Plate read AB-123" width="640" height="360"' in (
            detail.text
        )
        assert 'viewBox="0 0 640 360"' in detail.text
        assert '<rect x="120" y="200" width="180" height="60"' in detail.text
        assert f'href="/api/v1/media/{media}" data-image-link' in detail.text
