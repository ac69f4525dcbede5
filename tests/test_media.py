"""Media over HTTP on both databases: events with images (multipart), the upload URL flow,
serving (ETag, ranges, cache headers), signed links, isolation, usage, retention and
deletion. Every refused upload leaves nothing behind: no row, no event, no file."""

from __future__ import annotations

import hashlib
import io
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from PIL import Image
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.events.models import DeviceEvent
from fleetcore.media import housekeeping, signing
from fleetcore.media.models import Media
from fleetcore.media.store import MediaStore
from tests.conftest import client_for, running_app
from tests.support import images
from tests.support.devices import new_device
from tests.support.tenants import PASSWORD, Tenant, make_tenant

EVENTS = "/api/v1/devices/me/events"
UPLOADS = "/api/v1/devices/me/media/uploads"


def device_headers(token: str) -> dict[str, str]:
    return {"X-Device-Token": token}


async def post_with_images(
    client: httpx.AsyncClient,
    token: str,
    event: Any,
    files: list[tuple[str, bytes]],
    *,
    content_type: str = "image/jpeg",
) -> httpx.Response:
    return await client.post(
        EVENTS,
        headers=device_headers(token),
        data={"event": orjson.dumps(event).decode()},
        files=[(name, (f"{name}.jpg", data, content_type)) for name, data in files],
    )


async def counts(db: Database) -> tuple[int, int]:
    async with db.session() as session:
        media = await session.scalar(select(func.count(Media.id)))
        events = await session.scalar(select(func.count(DeviceEvent.id)))
    return int(media or 0), int(events or 0)


async def files_in(app: FastAPI) -> list[str]:
    store: MediaStore = app.state.media_store
    return [key async for key, _ in store.keys("")]


async def assert_nothing_stored(app: FastAPI, db: Database) -> None:
    assert await counts(db) == (0, 0)
    assert await files_in(app) == []


def refused(code: str) -> float:
    """fleetcore_media_refused_total for this reason, now."""
    value = REGISTRY.get_sample_value("fleetcore_media_refused_total", {"reason": code.lower()})
    return value or 0.0


async def profile_with_limit(client: httpx.AsyncClient, tenant: Tenant, limit: int) -> str:
    response = await client.post(
        "/api/v1/device-profiles",
        headers=tenant.headers(Role.ADMIN),
        json={"name": f"cams {time.monotonic_ns()}", "media_max_bytes": limit},
    )
    assert response.status_code == 201, response.text
    assert response.json()["media_max_bytes"] == limit
    return str(response.json()["id"])


async def test_an_event_with_an_image_is_stored_and_served(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    photo = images.jpeg((640, 480))
    response = await post_with_images(
        client, token, {"type": "snapshot", "data": {"plate": "AB 123"}}, [("image", photo)]
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["stored"] == 1
    [media] = body["media"]
    assert media["part"] == "image"
    assert media["content_type"] == "image/jpeg"
    assert (media["width"], media["height"]) == (640, 480)
    assert media["bytes"] > 0
    assert await counts(db) == (1, 1)
    assert len(await files_in(app)) == 2  # the image and its thumbnail

    events = await client.get(f"/api/v1/devices/{device_id}/events", headers=tenant.headers())
    [event] = events.json()["items"]
    listing = await client.get(
        f"/api/v1/devices/{device_id}/media", headers=tenant.headers(Role.VIEWER)
    )
    assert listing.status_code == 200, listing.text
    [row] = listing.json()["items"]
    assert row["id"] == media["id"]
    assert row["event_id"] == event["id"]
    assert row["attached_at"] is not None

    served = await client.get(f"/api/v1/media/{media['id']}", headers=tenant.headers(Role.VIEWER))
    assert served.status_code == 200, served.text
    assert len(served.content) == media["bytes"]
    assert hashlib.sha256(served.content).hexdigest() == row["sha256"]
    assert images.CAMERA_MAKER.encode() not in served.content
    assert not Image.open(io.BytesIO(served.content)).getexif()
    thumb = await client.get(
        f"/api/v1/media/{media['id']}/thumbnail", headers=tenant.headers(Role.VIEWER)
    )
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(thumb.content)).size == (320, 240)


async def test_several_events_own_the_parts_they_name(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    events = [
        {"type": "vehicle", "media": ["front"]},
        {"type": "snapshot", "media": ["rear", "plate"]},
        {"type": "heartbeat"},
    ]
    response = await post_with_images(
        client,
        token,
        events,
        [("front", images.jpeg()), ("rear", images.png()), ("plate", images.webp())],
    )
    assert response.status_code == 201, response.text
    parts = {m["part"]: m for m in response.json()["media"]}
    assert {p: m["content_type"] for p, m in parts.items()} == {
        "front": "image/jpeg",
        "rear": "image/png",
        "plate": "image/webp",
    }
    stored = await client.get(f"/api/v1/devices/{device_id}/events", headers=tenant.headers())
    by_type = {e["type"]: e["id"] for e in stored.json()["items"]}
    listing = await client.get(f"/api/v1/devices/{device_id}/media", headers=tenant.headers())
    owner = {m["id"]: m["event_id"] for m in listing.json()["items"]}
    assert owner[parts["front"]["id"]] == by_type["vehicle"]
    assert owner[parts["rear"]["id"]] == owner[parts["plate"]["id"]] == by_type["snapshot"]
    assert await counts(db) == (3, 3)
    # Paged, newest first: two pages cover the three without repeating one.
    first = await client.get(
        f"/api/v1/devices/{device_id}/media", headers=tenant.headers(), params={"limit": 2}
    )
    assert len(first.json()["items"]) == 2
    cursor = first.json()["next_cursor"]
    assert cursor
    second = await client.get(
        f"/api/v1/devices/{device_id}/media",
        headers=tenant.headers(),
        params={"limit": 2, "cursor": cursor},
    )
    assert second.json()["next_cursor"] is None
    paged = [m["id"] for m in first.json()["items"] + second.json()["items"]]
    assert sorted(paged) == sorted(owner)


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("gif named jpeg", 415, "MEDIA_UNSUPPORTED_TYPE"),
        ("text named jpeg", 415, "MEDIA_UNSUPPORTED_TYPE"),
        ("over the profile limit", 413, "MEDIA_TOO_LARGE"),
        ("decompression bomb", 422, "MEDIA_TOO_MANY_PIXELS"),
        ("truncated", 422, "MEDIA_CORRUPT"),
        ("one bad among good", 422, "MEDIA_CORRUPT"),
        ("unclaimed part", 422, "MEDIA_PART_UNCLAIMED"),
        ("bad event", 422, "INVALID_EVENT"),
        ("no file", 422, "MEDIA_REQUIRED"),
        ("no event part", 422, "EVENT_REQUIRED"),
        ("nine files", 422, "MULTIPART_INVALID"),
        ("unknown media id", 422, "MEDIA_REFERENCE_INVALID"),
    ],
)
async def test_bad_uploads_are_refused_and_store_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant: Tenant,
    db: Database,
    case: str,
    status: int,
    code: str,
) -> None:
    photo = images.jpeg((320, 240))
    profile = await profile_with_limit(client, tenant, len(photo) - 1)
    _, token = await new_device(client, tenant, profile_id=profile)
    event: Any = {"type": "snapshot"}
    files = [("image", images.jpeg((64, 48)))]
    match case:
        case "gif named jpeg":
            files = [("image", images.gif())]
        case "text named jpeg":
            files = [("image", b"\xff\xd9 this is text, whatever the header says")]
        case "over the profile limit":
            files = [("image", photo)]
        case "decompression bomb":
            files = [("image", images.png_bomb())]
        case "truncated":
            data = images.jpeg((300, 200))
            files = [("image", data[: len(data) // 2])]
        case "one bad among good":
            event = [{"type": "a", "media": ["one"]}, {"type": "b", "media": ["two"]}]
            files = [("one", images.jpeg((64, 48))), ("two", images.jpeg((300, 200))[:500])]
        case "unclaimed part":
            event = [{"type": "a", "media": ["one"]}, {"type": "b"}]
            files = [("one", images.jpeg((64, 48))), ("stray", images.jpeg((64, 48)))]
        case "bad event":
            event = {"type": "x", "severity": "loud"}
        case "no file":
            files = []
        case "nine files":
            event = {"type": "a"}
            files = [(f"f{i}", images.jpeg((16, 16))) for i in range(9)]
        case "unknown media id":
            event = {"type": "a", "media": ["image", str(uuid.uuid4())]}
    refused_before = refused(code)
    if case == "no event part":
        response = await client.post(
            EVENTS,
            headers=device_headers(token),
            files=[("image", ("a.jpg", images.jpeg((16, 16)), "image/jpeg"))],
        )
    elif case == "no file":
        body = (
            b'--b\r\nContent-Disposition: form-data; name="event"\r\n\r\n{"type": "a"}\r\n--b--\r\n'
        )
        response = await client.post(
            EVENTS,
            headers={**device_headers(token), "Content-Type": "multipart/form-data; boundary=b"},
            content=body,
        )
    else:
        response = await post_with_images(client, token, event, files)
    assert refused(code) == refused_before + 1
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    await assert_nothing_stored(app, db)


async def test_the_whole_request_is_limited(db: Database, tmp_path: Path) -> None:
    async with (
        running_app(db, tmp_path, media_request_max_bytes=64 * 1024) as app,
        client_for(app) as client,
    ):
        tenant = await make_tenant(client, db)
        _, token = await new_device(client, tenant)
        big = os.urandom(70 * 1024)
        response = await post_with_images(client, token, {"type": "a"}, [("image", big)])
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "MEDIA_REQUEST_TOO_LARGE"
        # Chunked, without a Content-Length: cut off as it streams.
        boundary = "fleetcore-test"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="event"\r\n\r\n'
            '{"type": "a"}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"'
            "\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield head
            for _ in range(10):
                yield os.urandom(16 * 1024)
            yield f"\r\n--{boundary}--\r\n".encode()

        chunked = await client.post(
            EVENTS,
            headers={
                **device_headers(token),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=chunks(),
        )
        assert chunked.status_code == 413, chunked.text
        assert chunked.json()["error"]["code"] == "MEDIA_REQUEST_TOO_LARGE"
        await assert_nothing_stored(app, db)


async def upload(
    client: httpx.AsyncClient, token: str, data: bytes, content_type: str = "image/jpeg"
) -> tuple[str, str]:
    """Ask for an upload URL and PUT the bytes; returns (media id, upload URL)."""
    created = await client.post(
        UPLOADS,
        headers=device_headers(token),
        json={"content_type": content_type, "bytes": len(data)},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["upload_url"].startswith("http://testserver/api/v1/media/uploads/")
    put = await client.put(body["upload_url"], content=data)
    assert put.status_code == 201, put.text
    assert put.json()["id"] == body["media_id"]
    return str(body["media_id"]), str(body["upload_url"])


async def test_upload_url_then_an_event_refers_to_it(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    _, other_token = await new_device(client, tenant)
    media_id, url = await upload(client, token, images.jpeg((800, 600)))
    again = await client.put(url, content=images.jpeg((10, 10)))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "MEDIA_UPLOAD_USED"
    # Another device cannot claim it; nothing of that payload is stored.
    stolen = await client.post(
        EVENTS, headers=device_headers(other_token), json={"type": "x", "media": [media_id]}
    )
    assert stolen.status_code == 422
    assert stolen.json()["error"]["code"] == "MEDIA_REFERENCE_INVALID"
    assert await counts(db) == (1, 0)

    sent = await client.post(
        EVENTS, headers=device_headers(token), json={"type": "snapshot", "media": [media_id]}
    )
    assert sent.status_code == 201, sent.text
    assert sent.json() == {"stored": 1}
    listing = await client.get(f"/api/v1/devices/{device_id}/media", headers=tenant.headers())
    [row] = listing.json()["items"]
    assert row["event_id"] is not None
    assert (row["width"], row["height"]) == (800, 600)
    twice = await client.post(
        EVENTS, headers=device_headers(token), json={"type": "again", "media": [media_id]}
    )
    assert twice.status_code == 422
    assert await counts(db) == (1, 1)


async def test_upload_urls_refuse_bad_tokens_and_bad_images(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    too_big = await client.post(
        UPLOADS,
        headers=device_headers(token),
        json={"content_type": "image/jpeg", "bytes": 11 * 1024 * 1024},
    )
    assert too_big.status_code == 422  # a declared size; a body too large is 413
    assert too_big.json()["error"]["code"] == "MEDIA_TOO_LARGE"
    gif = await client.post(
        UPLOADS, headers=device_headers(token), json={"content_type": "image/gif", "bytes": 10}
    )
    assert gif.status_code == 422
    created = await client.post(
        UPLOADS, headers=device_headers(token), json={"content_type": "image/jpeg", "bytes": 99}
    )
    media_id = uuid.UUID(created.json()["media_id"])
    url: str = created.json()["upload_url"]
    # Not uploaded yet: no event may name it.
    early = await client.post(
        EVENTS, headers=device_headers(token), json={"type": "x", "media": [str(media_id)]}
    )
    assert early.status_code == 422
    assert early.json()["error"]["code"] == "MEDIA_REFERENCE_INVALID"
    settings = app.state.settings
    expired = signing.sign(settings, "upload", media_id, int(time.time()) - 1)
    for path, code in (
        (f"/api/v1/media/uploads/{expired}", "MEDIA_URL_EXPIRED"),
        (url[:-3] + "abc", "MEDIA_URL_INVALID"),
        (
            "/api/v1/media/uploads/" + url.rsplit("/", 1)[1].replace("u.", "i.", 1),
            "MEDIA_URL_INVALID",
        ),
    ):
        response = await client.put(path, content=images.jpeg((10, 10)))
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == code
    corrupt = await client.put(url, content=images.jpeg((100, 100))[:300])
    assert corrupt.status_code == 422
    assert corrupt.json()["error"]["code"] == "MEDIA_CORRUPT"
    bomb = await client.put(url, content=images.png_bomb())
    assert bomb.json()["error"]["code"] == "MEDIA_TOO_MANY_PIXELS"
    assert await files_in(app) == []
    # Still pending after refusals: the same URL takes a good image once.
    assert (await client.put(url, content=images.png())).status_code == 201
    # A pending upload nobody sent expires; the housekeeping job removes it.
    late = await client.post(
        UPLOADS, headers=device_headers(token), json={"content_type": "image/png", "bytes": 9}
    )
    assert late.status_code == 201
    report = await housekeeping.run(
        app.state.database,
        app.state.media_store,
        settings,
        now=utcnow() + timedelta(seconds=settings.media_upload_url_ttl_s + 1),
    )
    assert report.removed["expired"] == 1
    assert await counts(db) == (1, 0)


async def test_serving_headers_ranges_and_validators(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    _, token = await new_device(client, tenant)
    media_id, _ = await upload(client, token, images.png((400, 300)))
    url = f"/api/v1/media/{media_id}"
    headers = tenant.headers(Role.VIEWER)
    full = await client.get(url, headers=headers)
    assert full.status_code == 200
    size = len(full.content)
    assert full.headers["content-type"] == "image/png"
    assert full.headers["cache-control"] == "private, max-age=3600"
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["content-disposition"].startswith("inline")
    assert full.headers["content-length"] == str(size)
    etag = full.headers["etag"]
    assert etag == f'"{hashlib.sha256(full.content).hexdigest()}"'

    cached = await client.get(url, headers={**headers, "If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    changed = await client.get(url, headers={**headers, "If-None-Match": '"other"'})
    assert changed.status_code == 200

    part = await client.get(url, headers={**headers, "Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == full.content[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    tail = await client.get(url, headers={**headers, "Range": "bytes=-5"})
    assert tail.status_code == 206
    assert tail.content == full.content[-5:]
    rest = await client.get(url, headers={**headers, "Range": f"bytes={size - 3}-"})
    assert rest.content == full.content[-3:]
    beyond = await client.get(url, headers={**headers, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    assert beyond.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    several = await client.get(url, headers={**headers, "Range": "bytes=0-1,5-6"})
    assert several.status_code == 200  # several ranges: the whole file

    assert (await client.get(url)).status_code == 401
    missing = await client.get(f"/api/v1/media/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404


async def test_signed_links_work_without_auth_until_they_expire(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    _, token = await new_device(client, tenant)
    media_id, _ = await upload(client, token, images.jpeg((500, 400)))
    direct = await client.get(f"/api/v1/media/{media_id}", headers=tenant.headers())
    link = await client.get(f"/api/v1/media/{media_id}/link", headers=tenant.headers(Role.VIEWER))
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    assert url.startswith("http://testserver/api/v1/media/signed/")
    anonymous = await client.get(url)
    assert anonymous.status_code == 200
    assert anonymous.content == direct.content
    assert anonymous.headers["cache-control"].startswith("private, max-age=")
    thumb_link = await client.get(
        f"/api/v1/media/{media_id}/link", params={"thumbnail": "true"}, headers=tenant.headers()
    )
    thumb = await client.get(thumb_link.json()["url"])
    assert Image.open(io.BytesIO(thumb.content)).size == (320, 256)
    expired = signing.sign(app.state.settings, "image", uuid.UUID(media_id), int(time.time()) - 1)
    late = await client.get(f"/api/v1/media/signed/{expired}")
    assert late.status_code == 401
    assert late.json()["error"]["code"] == "MEDIA_URL_EXPIRED"
    forged = await client.get(url[:-2] + ("AA" if not url.endswith("AA") else "BB"))
    assert forged.status_code == 401


async def test_another_organization_sees_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    media_id, _ = await upload(client, token, images.jpeg((64, 64)))
    intruder = other_tenant.headers(Role.ADMIN)
    for method, path in (
        ("GET", f"/api/v1/media/{media_id}"),
        ("GET", f"/api/v1/media/{media_id}/thumbnail"),
        ("GET", f"/api/v1/media/{media_id}/link"),
        ("GET", f"/api/v1/devices/{device_id}/media"),
        ("DELETE", f"/api/v1/devices/{device_id}/media"),
    ):
        response = await client.request(method, path, headers=intruder)
        assert response.status_code == 404, f"{method} {path}: {response.text}"
    usage = await client.get("/api/v1/media/usage", headers=intruder)
    assert usage.json() == {"bytes": 0, "files": 0, "devices": []}
    still = await client.get(f"/api/v1/media/{media_id}", headers=tenant.headers())
    assert still.status_code == 200


async def test_usage_retention_and_deletion(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    first, first_token = await new_device(client, tenant)
    second, second_token = await new_device(client, tenant)
    # Attached media (an unattached upload would expire before the retention test runs).
    for device_token, files in (
        (first_token, [("one", images.jpeg((300, 200))), ("two", images.png((100, 100)))]),
        (second_token, [("image", images.webp())]),
    ):
        response = await post_with_images(client, device_token, {"type": "a"}, files)
        assert response.status_code == 201, response.text
    async with db.session() as session:
        rows = (await session.scalars(select(Media))).all()
    expected = {
        str(d): sum(m.bytes + m.thumb_bytes for m in rows if m.device_id == d)
        for d in {m.device_id for m in rows}
    }
    usage = (await client.get("/api/v1/media/usage", headers=tenant.headers(Role.VIEWER))).json()
    assert usage["files"] == 6
    assert usage["bytes"] == sum(expected.values())
    assert {d["device_id"]: d["bytes"] for d in usage["devices"]} == expected
    assert {d["device_id"]: d["files"] for d in usage["devices"]} == {first: 4, second: 2}

    # Retention: admins only, audited, applied by the housekeeping job.
    viewer = await client.put(
        "/api/v1/media/retention", headers=tenant.headers(Role.VIEWER), json={"days": 1}
    )
    assert viewer.status_code == 403
    default = await client.get("/api/v1/media/retention", headers=tenant.headers())
    assert default.json()["is_default"] is True
    assert default.json()["days"] == 90
    bad = await client.put("/api/v1/media/retention", headers=tenant.headers(), json={"days": -1})
    assert bad.status_code == 422
    put = await client.put("/api/v1/media/retention", headers=tenant.headers(), json={"days": 2})
    assert put.status_code == 200, put.text
    assert put.json()["days"] == 2
    assert put.json()["is_default"] is False
    audit = await client.get(
        "/api/v1/audit", headers=tenant.headers(), params={"action": "media.retention.update"}
    )
    assert [e["details"] for e in audit.json()["items"]] == [{"before": 90, "after": 2}]

    settings = app.state.settings
    store = app.state.media_store
    soon = await housekeeping.run(db, store, settings, now=utcnow() + timedelta(days=1))
    assert soon.removed["retention"] == 0
    # Deleting a device's data deletes its media, files included (admins; audited).
    not_admin = await client.delete(
        f"/api/v1/devices/{second}/media", headers=tenant.headers(Role.MANAGER)
    )
    assert not_admin.status_code == 403
    removed = await client.delete(f"/api/v1/devices/{second}/media", headers=tenant.headers())
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"deleted_files": 2, "deleted_bytes": expected[second]}
    assert len(await files_in(app)) == 4
    audit = await client.get(
        "/api/v1/audit", headers=tenant.headers(), params={"action": "media.device.delete"}
    )
    assert audit.json()["items"][0]["target_id"] == second

    later = await housekeeping.run(db, store, settings, now=utcnow() + timedelta(days=3))
    assert later.removed["retention"] == 2
    assert await counts(db) == (0, 2)
    assert await files_in(app) == []


async def test_media_of_deleted_devices_and_orphan_files_are_removed(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    kept, kept_token = await new_device(client, tenant)
    gone, gone_token = await new_device(client, tenant)
    kept_media, _ = await upload(client, kept_token, images.jpeg((64, 64)))
    sent = await client.post(
        EVENTS, headers=device_headers(kept_token), json={"type": "a", "media": [kept_media]}
    )
    assert sent.status_code == 201
    await upload(client, gone_token, images.jpeg((64, 64)))
    deleted = await client.delete(f"/api/v1/devices/{gone}", headers=tenant.headers())
    assert deleted.status_code == 204, deleted.text
    store: MediaStore = app.state.media_store
    await store.put("stray/orphan/old", b"left by a crash")
    await store.put("stray/orphan/new", b"a request still writing")
    old = time.time() - 2 * 3600
    os.utime(Path(app.state.settings.data_dir) / "media/stray/orphan/old", (old, old))
    report = await housekeeping.run(db, store, app.state.settings)
    assert report.removed["device"] == 1
    assert report.orphans == 1
    remaining = await files_in(app)
    assert "stray/orphan/old" not in remaining
    assert "stray/orphan/new" in remaining
    assert len(remaining) == 3  # the kept image, its thumbnail and the new stray file
    listing = await client.get(f"/api/v1/devices/{kept}/media", headers=tenant.headers())
    assert [m["id"] for m in listing.json()["items"]] == [kept_media]


async def test_profiles_take_a_media_limit(client: httpx.AsyncClient, tenant: Tenant) -> None:
    profile = await profile_with_limit(client, tenant, 2048)
    path = f"/api/v1/device-profiles/{profile}"
    cleared = await client.patch(path, headers=tenant.headers(), json={"media_max_bytes": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["media_max_bytes"] is None
    too_small = await client.patch(path, headers=tenant.headers(), json={"media_max_bytes": 10})
    assert too_small.status_code == 422


async def test_media_are_served_to_the_session_cookie_and_api_keys(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    _, token = await new_device(client, tenant)
    media_id, _ = await upload(client, token, images.jpeg((64, 64)))
    key = await client.post(
        "/api/v1/api-keys", headers=tenant.headers(Role.ADMIN), json={"name": "media reader"}
    )
    assert key.status_code == 201, key.text
    by_key = await client.get(f"/api/v1/media/{media_id}", headers={"X-API-Key": key.json()["key"]})
    assert by_key.status_code == 200, by_key.text
    # A browser: the HTTP-only session cookie of the sign-in form.
    form = await client.get("/auth/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf is not None
    signed_in = await client.post(
        "/auth/login",
        data={
            "email": tenant.emails[Role.VIEWER],
            "password": PASSWORD,
            "csrf_token": csrf.group(1),
        },
    )
    assert signed_in.status_code == 303
    by_cookie = await client.get(f"/api/v1/media/{media_id}/thumbnail")
    assert by_cookie.status_code == 200
    assert by_cookie.headers["content-type"] == "image/jpeg"
    assert by_cookie.content != by_key.content  # the thumbnail, not the image
