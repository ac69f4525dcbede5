"""Plate reads through the real app: plate_read events posted by a camera's token, fuzzy
search, filters and pages, history, visits with duplicate suppression, watchlists and their
alerts and notifications, refusals that store nothing, and isolation between organizations."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from fleetcore.alerts.models import Alert
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.events.models import DeviceEvent
from fleetcore.notifications.models import NotificationDelivery
from fleetcore.plates.models import PlateRead, PlateVisit
from fleetcore.rules.index import load_index
from tests.support.plates import camera, plate_read, send, watchlist
from tests.support.tenants import Tenant
from tests.test_dashboard_pages import browser_like

READS = "/api/v1/plates/reads"


def _now() -> int:
    return int(time.time() * 1000)


async def _search(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> dict[str, Any]:
    response = await client.get(READS, params=params, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _plates(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> list[str]:
    return [r["plate_norm"] for r in (await _search(client, tenant, **params))["items"]]


async def _count(db: Database, model: type) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _alerts(db: Database, rule_id: str) -> list[Alert]:
    async with db.session() as session:
        rows = await session.scalars(select(Alert).where(Alert.rule_id == uuid.UUID(rule_id)))
        return list(rows.all())


async def test_reads_are_stored_and_found_however_typed(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await camera(client, tenant, "north gate")
    now = _now()
    stored = await send(
        client,
        token,
        plate_read(
            "AB-123-CD",
            0.91,
            now - 3000,
            camera="lane-cam",
            direction="in",
            lane=2,
            bbox=[10, 20, 120, 40],
            vehicle_type="car",
            vehicle_color="red",
        ),
        plate_read("XY 999 ZZ", 0.8, now - 2000),
        plate_read("กข ๑๒๓๔", 0.95, now - 1000, region="Bangkok"),
    )
    assert stored.status_code == 201, stored.text

    found = (await _search(client, tenant, q="ab 123 cd"))["items"]
    assert len(found) == 1
    read = found[0]
    assert read["plate"] == "AB-123-CD"
    assert read["plate_norm"] == "AB123CD"
    assert read["device_id"] == device_id
    assert read["device_name"] == "north gate"
    assert read["camera"] == "lane-cam"
    assert (read["direction"], read["lane"], read["bbox"]) == ("in", 2, [10, 20, 120, 40])
    assert (read["vehicle_type"], read["vehicle_color"]) == ("car", "red")
    assert read["confidence"] == 0.91
    assert read["media_id"] is None
    assert read["image_width"] is None
    assert read["watchlists"] == []
    assert datetime.fromisoformat(read["ts"]) == datetime.fromtimestamp((now - 3000) / 1000, UTC)

    assert await _plates(client, tenant, q="AB124CD") == ["AB123CD"]  # one substitution
    assert await _plates(client, tenant, q="AB12CD") == ["AB123CD"]  # one dropped
    assert await _plates(client, tenant, q="AB1234CD") == ["AB123CD"]  # one added
    assert await _plates(client, tenant, q="AB125CE") == []  # two edits
    assert await _plates(client, tenant, q="AB124CD", exact="true") == []
    assert await _plates(client, tenant, q="AB-I23-CD", exact="true") == ["AB123CD"]  # I/1
    assert await _plates(client, tenant, q="XY 999 2Z") == ["XY999ZZ"]
    thai = (await _search(client, tenant, q="กข1234", exact="true"))["items"]
    assert [(r["plate_norm"], r["region"]) for r in thai] == [("กข1234", "กรุงเทพมหานคร")]
    assert await _plates(client, tenant, q="กค 1234") == ["กข1234"]  # a Thai letter misread
    assert await _plates(client, tenant, q="กค 1235") == []
    assert len((await _search(client, tenant))["items"]) == 3
    # The address, GET /api/v1/plates?q=, is the same search.
    alias = await client.get(
        "/api/v1/plates", params={"q": "ab 124 cd"}, headers=tenant.headers(Role.VIEWER)
    )
    assert alias.status_code == 200
    assert [r["plate_norm"] for r in alias.json()["items"]] == ["AB123CD"]

    one = await client.get(f"{READS}/{read['id']}", headers=tenant.headers(Role.VIEWER))
    assert one.status_code == 200
    assert one.json() == read
    missing = await client.get(f"{READS}/999999", headers=tenant.headers(Role.VIEWER))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "PLATE_READ_NOT_FOUND"
    empty = await client.get(READS, params={"q": "--"}, headers=tenant.headers(Role.VIEWER))
    assert empty.status_code == 422
    assert empty.json()["error"]["code"] == "INVALID_PLATE_QUERY"


async def test_filters_and_pages_newest_first(client: httpx.AsyncClient, tenant: Tenant) -> None:
    east, east_token = await camera(client, tenant, "east")
    _, west_token = await camera(client, tenant, "west")
    base = _now() - 600_000
    reads = [plate_read(f"EE{i}00", 0.9, base + i * 1000) for i in range(5)]
    assert (await send(client, east_token, *reads)).status_code == 201
    west = [plate_read(f"WW{i}00", 0.9, base + i * 1000 + 500) for i in range(3)]
    assert (await send(client, west_token, *west)).status_code == 201

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = await _search(client, tenant, **params)
        seen += [r["plate_norm"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["EE400", "EE300", "WW200", "EE200", "WW100", "EE100", "WW000", "EE000"]

    assert await _plates(client, tenant, camera=east) == [f"EE{i}00" for i in range(4, -1, -1)]
    since = datetime.fromtimestamp((base + 1000) / 1000, UTC).isoformat()
    until = datetime.fromtimestamp((base + 3000) / 1000, UTC).isoformat()
    window = await _plates(client, tenant, camera=east, since=since, until=until)
    assert window == ["EE200", "EE100"]  # since inclusive, until not

    await watchlist(client, tenant, "vip", "ww 1 00")
    assert await _plates(client, tenant, watchlisted="true") == ["WW100"]
    assert "WW100" not in await _plates(client, tenant, watchlisted="false")
    listed = (await _search(client, tenant, q="WW100", exact="true"))["items"][0]
    assert listed["watchlists"] == ["vip"]

    bad = await client.get(READS, params={"cursor": "bm9wZQ"}, headers=tenant.headers())
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "INVALID_CURSOR"


async def test_repeated_reads_are_one_visit_and_one_alert_with_a_notification(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    channel = await client.post(
        "/api/v1/notification-channels",
        headers=tenant.headers(Role.ADMIN),
        json={
            "name": "plates hook",
            "type": "webhook",
            "url": "http://127.0.0.1:9/hook",
            "secret": "plates-secret-0123456789",
        },
    )
    assert channel.status_code == 201, channel.text
    device_id, token = await camera(client, tenant, "car park")
    stolen = await watchlist(client, tenant, "stolen", "ab-123-cd", severity="critical")
    base = _now() - 300_000
    for i in range(4):  # one payload each, 10 s apart: within the 60 s window
        sent = await send(client, token, plate_read("AB 123 CD", 0.85 + i / 100, base + i * 10_000))
        assert sent.status_code == 201, sent.text

    visits = await client.get(
        "/api/v1/plates/visits", params={"q": "AB123CD"}, headers=tenant.headers(Role.VIEWER)
    )
    assert visits.status_code == 200
    [visit] = visits.json()["items"]
    assert visit["reads"] == 4
    assert visit["best_confidence"] == 0.88
    assert visit["device_name"] == "car park"
    assert datetime.fromisoformat(visit["first_ts"]) == datetime.fromtimestamp(base / 1000, UTC)

    [alert] = await _alerts(db, stolen["rule_id"])
    assert alert.count == 1
    assert alert.severity == "critical"
    assert str(alert.device_id) == device_id
    hit = alert.details["values"]
    first = (await _search(client, tenant, q="AB123CD"))["items"][-1]
    assert hit["plate"] == "AB 123 CD"
    assert hit["read_id"] == first["id"]
    assert hit["confidence"] == 0.85
    assert hit["watchlist"] == "stolen"
    assert hit["read_url"] == f"/plates/reads/{first['id']}"
    assert hit["media_id"] is None
    async with db.session() as session:
        deliveries = (
            await session.scalars(
                select(NotificationDelivery).where(NotificationDelivery.alert_id == alert.id)
            )
        ).all()
    assert [d.event for d in deliveries] == ["alert.opened"]
    body = orjson.loads(deliveries[0].body)
    assert body["alert"]["details"]["values"]["read_url"] == f"/plates/reads/{first['id']}"

    history = await client.get(
        "/api/v1/plates/ab-123-cd/history", headers=tenant.headers(Role.VIEWER)
    )
    assert history.status_code == 200, history.text
    shown = history.json()
    assert (shown["plate_norm"], shown["reads"], shown["visits"]) == ("AB123CD", 4, 1)
    assert [c["visits"] for c in shown["cameras"]] == [1]
    assert shown["cameras"][0]["device_name"] == "car park"
    assert [v["id"] for v in shown["recent_visits"]] == [visit["id"]]

    # Past the window: a new visit; the camera's alert is open still, so it counts a repeat.
    later = await send(client, token, plate_read("AB123CD", 0.99, base + 200_000))
    assert later.status_code == 201
    [alert] = await _alerts(db, stolen["rule_id"])
    assert alert.count == 2
    newest = (await _search(client, tenant, q="AB123CD"))["items"][0]
    assert alert.details["values"]["read_id"] == newest["id"]
    again = await client.get("/api/v1/plates/AB123CD/history", headers=tenant.headers())
    assert (again.json()["reads"], again.json()["visits"]) == (5, 2)


async def test_below_the_threshold_or_disabled_no_alert(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await camera(client, tenant)
    strict = await watchlist(client, tenant, "strict", "LOW1", min_confidence=0.9)
    off = await watchlist(client, tenant, "off", "LOW1", "OFF1", enabled=False)
    base = _now() - 100_000
    assert (await send(client, token, plate_read("LOW1", 0.89, base))).status_code == 201
    assert (await send(client, token, plate_read("OFF1", 1.0, base))).status_code == 201
    assert await _alerts(db, strict["rule_id"]) == []
    assert await _alerts(db, off["rule_id"]) == []
    # A better read of the same visit reaches the threshold: the visit alerts, once.
    assert (await send(client, token, plate_read("LOW1", 0.95, base + 5000))).status_code == 201
    assert (await send(client, token, plate_read("LOW1", 0.97, base + 9000))).status_code == 201
    [alert] = await _alerts(db, strict["rule_id"])
    assert alert.count == 1
    assert alert.details["values"]["confidence"] == 0.95
    assert await _alerts(db, off["rule_id"]) == []


async def test_bad_plate_reads_store_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await camera(client, tenant)
    good = plate_read("AB123", 0.9)
    for events, field, index in [
        ([plate_read("AB123", 1.2)], "data.confidence", None),
        ([good, plate_read("", 0.9)], "data.plate", 1),
        ([good, {"type": "door_open"}, plate_read("AB1", 0.9, lane=-1)], "data.lane", 2),
        ([plate_read("AB1", 0.9, colour="red")], "data.colour", None),
        ([{"type": "plate_read", "data": {"plate": "AB1"}}], "data.confidence", None),
        ([plate_read("AB1", 0.9, read_id="no spaces")], "data.read_id", None),
    ]:
        response = await send(client, token, *events)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "INVALID_PLATE_READ"
        assert error["details"] == {"index": index, "field": field}
    assert await _count(db, DeviceEvent) == 0
    assert await _count(db, PlateRead) == 0
    assert await _count(db, PlateVisit) == 0
    other = await send(client, token, {"type": "door_open", "data": {"plate": 1}})
    assert other.status_code == 201  # other event types are not the hook's
    assert await _count(db, PlateRead) == 0


async def test_a_read_sent_again_with_its_read_id_is_a_duplicate_and_stores_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """A camera whose answer was lost sends the read again: refused whole (no second event,
    read or visit count), so the camera can drop it as delivered."""
    _, token = await camera(client, tenant)
    now = _now()
    first = await send(client, token, plate_read("AB123", 0.9, now - 2000, read_id="cam1:0001"))
    assert first.status_code == 201, first.text
    read_id = (await _search(client, tenant))["items"][0]["id"]
    again = await send(client, token, plate_read("AB123", 0.9, now - 2000, read_id="cam1:0001"))
    assert again.status_code == 409
    error = again.json()["error"]
    assert error["code"] == "PLATE_READ_DUPLICATE"
    assert error["details"] == {"read_id": "cam1:0001", "id": read_id}
    twice = await send(
        client,
        token,
        plate_read("XY1", 0.9, now - 1000, read_id="cam1:0002"),
        plate_read("XY1", 0.9, now - 1000, read_id="cam1:0002"),
    )
    assert twice.status_code == 409
    assert await _count(db, DeviceEvent) == 1
    assert await _count(db, PlateRead) == 1
    visits = (await _search(client, tenant))["items"]
    assert len(visits) == 1
    # Another device may use the same ids: they are the camera's own.
    _, other = await camera(client, tenant, "other gate")
    assert (
        await send(client, other, plate_read("AB123", 0.9, read_id="cam1:0001"))
    ).status_code == 201
    fresh = await send(client, token, plate_read("AB123", 0.9, now - 500, read_id="cam1:0003"))
    assert fresh.status_code == 201
    assert await _count(db, PlateRead) == 3


async def test_watchlists_entries_roles_and_their_rule(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    viewer, operator, manager = (
        tenant.headers(r) for r in (Role.VIEWER, Role.OPERATOR, Role.MANAGER)
    )
    refused = await client.post("/api/v1/watchlists", headers=operator, json={"name": "x"})
    assert refused.status_code == 403
    made = await client.post(
        "/api/v1/watchlists",
        headers=manager,
        json={"name": "banned", "description": "do not admit", "min_confidence": 0.7},
    )
    assert made.status_code == 201, made.text
    wl = made.json()
    assert (wl["severity"], wl["min_confidence"], wl["enabled"], wl["entries"]) == (
        "major",
        0.7,
        True,
        0,
    )
    taken = await client.post("/api/v1/watchlists", headers=manager, json={"name": "banned"})
    assert taken.status_code == 409
    entries = f"/api/v1/watchlists/{wl['id']}/entries"
    assert (await client.post(entries, headers=viewer, json={"plate": "A1"})).status_code == 403
    one = await client.post(entries, headers=operator, json={"plate": "ab-0I2", "note": "blue"})
    assert one.status_code == 201, one.text
    assert [(e["plate"], e["plate_key"]) for e in one.json()["added"]] == [("ab-0I2", "AB012")]
    many = await client.post(
        entries,
        headers=operator,
        json={"entries": [{"plate": "AB O12"}, {"plate": "กข 1234"}, {"plate": "กข1234"}]},
    )
    assert many.status_code == 201
    assert [e["plate"] for e in many.json()["added"]] == ["กข 1234"]
    assert many.json()["duplicates"] == ["AB O12", "กข1234"]
    blank = await client.post(entries, headers=operator, json={"plate": "--"})
    assert blank.status_code == 422
    imported = await client.post(
        f"{entries}/import",
        headers=operator,
        files={"file": ("plates.csv", b"plate,note\nZZ 999,from csv\nab012,\n")},
    )
    assert imported.status_code == 201, imported.text
    assert [e["plate"] for e in imported.json()["added"]] == ["ZZ 999"]
    assert imported.json()["duplicates"] == ["ab012"]

    shown = await client.get(f"/api/v1/watchlists/{wl['id']}", headers=viewer)
    assert shown.status_code == 200
    assert shown.json()["entries"] == 3
    assert {e["plate_key"] for e in shown.json()["entry_list"]} == {"AB012", "กข1234", "ZZ999"}
    listed = await client.get("/api/v1/watchlists", headers=viewer)
    assert [(w["name"], w["entries"]) for w in listed.json()] == [("banned", 3)]
    entry_id = shown.json()["entry_list"][0]["id"]
    gone = await client.delete(f"{entries}/{entry_id}", headers=operator)
    assert gone.status_code == 204
    again = await client.delete(f"{entries}/{entry_id}", headers=operator)
    assert again.status_code == 404

    # Its rule: listed, read-only through the rules API, never loaded by the engine.
    rule_url = f"/api/v1/rules/{wl['rule_id']}"
    rule = await client.get(rule_url, headers=viewer)
    assert rule.status_code == 200
    assert rule.json()["condition"] == {"type": "watchlist", "watchlist_id": wl["id"]}
    patched = await client.patch(rule_url, headers=manager, json={"severity": "info"})
    assert patched.status_code == 409
    assert patched.json()["error"]["code"] == "RULE_MANAGED"
    assert (await client.delete(rule_url, headers=manager)).status_code == 409
    dry = await client.post(
        "/api/v1/rules/dry-run",
        headers=manager,
        json={"rule_id": wl["rule_id"], "start": "0"},
    )
    assert dry.status_code == 422
    assert dry.json()["error"]["code"] == "RULE_MANAGED"
    async with browser_like(app, tenant, Role.MANAGER) as browser:
        page = await browser.get(f"/rules/{wl['rule_id']}")
        assert page.status_code == 200
        assert "belongs to a watchlist" in page.text
        assert "Save rule" not in page.text
        rules = await browser.get("/rules")
        assert "watchlist (plate reads)" in rules.text
        assert f'hx-post="/rules/{wl["rule_id"]}/delete"' not in rules.text
    async with db.session() as session:
        index = await load_index(session)
    assert uuid.UUID(wl["rule_id"]) not in {r.id for r in index.rules}

    # Changing the list changes its rule; deleting it deletes the rule.
    renamed = await client.patch(
        f"/api/v1/watchlists/{wl['id']}",
        headers=manager,
        json={"name": "barred", "severity": "minor", "enabled": False},
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["enabled"]) == ("barred", False)
    rule = await client.get(rule_url, headers=viewer)
    assert (rule.json()["name"], rule.json()["severity"], rule.json()["enabled"]) == (
        "Watchlist: barred",
        "minor",
        False,
    )
    deleted = await client.delete(f"/api/v1/watchlists/{wl['id']}", headers=manager)
    assert deleted.status_code == 204
    assert (await client.get(rule_url, headers=viewer)).status_code == 404
    assert (await client.get(f"/api/v1/watchlists/{wl['id']}", headers=viewer)).status_code == 404


async def test_disabling_a_watchlist_clears_its_open_alerts(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await camera(client, tenant)
    wl = await watchlist(client, tenant, "wanted", "WANT1")
    assert (await send(client, token, plate_read("WANT1", 0.99))).status_code == 201
    [alert] = await _alerts(db, wl["rule_id"])
    assert alert.status == "active"
    off = await client.patch(
        f"/api/v1/watchlists/{wl['id']}",
        headers=tenant.headers(Role.MANAGER),
        json={"enabled": False},
    )
    assert off.status_code == 200
    [alert] = await _alerts(db, wl["rule_id"])
    assert (alert.status, alert.clear_reason) == ("cleared", "rule_disabled")


async def test_another_organization_sees_no_plates(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    _, token = await camera(client, tenant)
    _, other_token = await camera(client, other_tenant)
    assert (await send(client, token, plate_read("MINE1", 0.9))).status_code == 201
    assert (await send(client, other_token, plate_read("THEIRS1", 0.9))).status_code == 201
    wl = await watchlist(client, tenant, "ours", "MINE1")
    mine = (await _search(client, tenant))["items"]
    assert [r["plate_norm"] for r in mine] == ["MINE1"]
    assert await _plates(client, other_tenant) == ["THEIRS1"]
    assert await _plates(client, other_tenant, q="MINE1") == []
    intruder = other_tenant.headers(Role.ADMIN)
    for path in (
        f"{READS}/{mine[0]['id']}",
        "/api/v1/plates/MINE1/history",
        f"/api/v1/watchlists/{wl['id']}",
    ):
        response = await client.get(path, headers=intruder)
        assert response.status_code == 404, path
    assert (await client.get("/api/v1/watchlists", headers=intruder)).json() == []


def test_alert_links_are_absolute_with_the_public_url() -> None:
    from fleetcore.plates.ingest import hit_details
    from fleetcore.plates.models import Watchlist

    media_id = uuid.uuid4()
    read = PlateRead(id=7, plate="AB-123-CD", plate_norm="AB123CD", media_id=media_id)
    watchlist = Watchlist(id=uuid.uuid4(), name="Stolen")
    relative = hit_details(read, watchlist, "")
    assert relative["read_url"] == "/plates/reads/7"
    assert relative["image_url"] == f"/api/v1/media/{media_id}"
    absolute = hit_details(read, watchlist, "", "https://fleet.example.com/")
    assert absolute["read_url"] == "https://fleet.example.com/plates/reads/7"
    assert absolute["image_url"] == f"https://fleet.example.com/api/v1/media/{media_id}"
    no_image = hit_details(PlateRead(id=8, plate="X1", plate_norm="X1"), watchlist, "")
    assert no_image["image_url"] is None


@pytest.mark.parametrize("url", ["ftp://fleet.example.com", "fleet.example.com", "https://"])
def test_a_public_url_that_is_no_web_address_is_refused(url: str) -> None:
    from pydantic import ValidationError

    from fleetcore.config import Settings

    with pytest.raises(ValidationError, match="public_url"):
        Settings(public_url=url)
