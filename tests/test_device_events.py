"""Device events: the pure parser, the device's POST (all or nothing), the users' list."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.errors import Invalid
from fleetcore.events.codec import MAX_DATA_BYTES, EventIn, parse_events
from fleetcore.events.models import DeviceEvent
from fleetcore.events.service import record_events
from tests.support.tenants import Tenant

NOW = 1_795_300_000_000
POST = "/api/v1/devices/me/events"


def _parse(document: Any) -> list[EventIn]:
    return parse_events(orjson.dumps(document), now_ms=NOW)


# -- the parser ----------------------------------------------------------------------------


def test_one_event_gets_its_defaults() -> None:
    assert _parse({"type": "door_open"}) == [
        EventIn(type="door_open", severity="info", data={}, ts_ms=NOW)
    ]
    explicit_nulls = {"type": "reboot", "severity": None, "data": None, "ts": None}
    assert _parse(explicit_nulls) == [EventIn("reboot", "info", {}, NOW)]


def test_a_list_keeps_every_field_and_its_order() -> None:
    events = _parse(
        [
            {"type": "door_open", "severity": "major", "data": {"door": 2}, "ts": NOW - 5000},
            {"type": "fw:update.done-1", "severity": "critical", "ts": float(NOW - 2000)},
        ]
    )
    assert events == [
        EventIn("door_open", "major", {"door": 2}, NOW - 5000),
        EventIn("fw:update.done-1", "critical", {}, NOW - 2000),
    ]


def test_data_up_to_the_limit_is_accepted() -> None:
    filler = "x" * (MAX_DATA_BYTES - len(b'{"k":""}'))
    assert len(orjson.dumps({"k": filler})) == MAX_DATA_BYTES
    assert _parse({"type": "big", "data": {"k": filler}})[0].data == {"k": filler}
    with pytest.raises(Invalid) as caught:
        _parse({"type": "big", "data": {"k": filler + "x"}})
    assert caught.value.details == {"index": None, "field": "data"}


@pytest.mark.parametrize(
    ("payload", "code", "details"),
    [
        pytest.param(b"{not json", "BAD_JSON", {}, id="not-json"),
        pytest.param(b'{"type": "\xff\xfe"}', "BAD_JSON", {}, id="not-utf8"),
        pytest.param(b"", "BAD_JSON", {}, id="empty"),
        pytest.param(b'"door_open"', "INVALID_EVENT", {"index": None, "field": None}, id="string"),
        pytest.param(b"[]", "INVALID_EVENT", {"index": None, "field": None}, id="empty-list"),
        pytest.param(b"[1]", "INVALID_EVENT", {"index": 0, "field": None}, id="item-not-object"),
        pytest.param(b"{}", "INVALID_EVENT", {"index": None, "field": "type"}, id="no-type"),
        pytest.param(
            b'[{"type": "ok"}, {"type": ""}]',
            "INVALID_EVENT",
            {"index": 1, "field": "type"},
            id="empty-type",
        ),
        pytest.param(
            orjson.dumps({"type": "t" * 65}),
            "INVALID_EVENT",
            {"index": None, "field": "type"},
            id="long-type",
        ),
        pytest.param(
            b'{"type": "door open"}', "INVALID_EVENT", {"index": None, "field": "type"}, id="space"
        ),
        pytest.param(b'{"type": 5}', "INVALID_EVENT", {"index": None, "field": "type"}, id="num"),
        pytest.param(
            b'{"type": "a", "severity": "fatal"}',
            "INVALID_EVENT",
            {"index": None, "field": "severity"},
            id="severity",
        ),
        pytest.param(
            b'{"type": "a", "data": [1]}',
            "INVALID_EVENT",
            {"index": None, "field": "data"},
            id="data-not-object",
        ),
        pytest.param(
            b'{"type": "a", "data": {"s": "a\\u0000b"}}',
            "INVALID_EVENT",
            {"index": None, "field": "data"},
            id="data-nul",
        ),
        pytest.param(
            b'{"type": "a", "ts": 1795300000}',
            "INVALID_EVENT",
            {"index": None, "field": "ts"},
            id="ts-in-seconds",
        ),
        pytest.param(
            orjson.dumps({"type": "a", "ts": NOW + 3_600_000}),
            "INVALID_EVENT",
            {"index": None, "field": "ts"},
            id="ts-future",
        ),
        pytest.param(
            b'{"type": "a", "ts": "1795300000000"}',
            "INVALID_EVENT",
            {"index": None, "field": "ts"},
            id="ts-string",
        ),
        pytest.param(
            b'{"type": "a", "ts": true}',
            "INVALID_EVENT",
            {"index": None, "field": "ts"},
            id="ts-bool",
        ),
        pytest.param(
            b'[{"type": "a"}, {"type": "b"}, {"type": "c", "sevrity": "info"}]',
            "INVALID_EVENT",
            {"index": 2, "field": "sevrity"},
            id="unknown-field",
        ),
        pytest.param(
            orjson.dumps([{"type": "a"}] * 101),
            "TOO_MANY_EVENTS",
            {"count": 101, "max": 100},
            id="too-many",
        ),
    ],
)
def test_bad_payloads_are_refused_with_a_named_reason(
    payload: bytes, code: str, details: dict[str, Any]
) -> None:
    with pytest.raises(Invalid) as caught:
        parse_events(payload, now_ms=NOW)
    assert caught.value.code == code
    assert caught.value.details == details
    assert caught.value.message


def test_a_hundred_events_are_accepted() -> None:
    assert len(_parse([{"type": "a"}] * 100)) == 100


# -- HTTP ----------------------------------------------------------------------------------


async def _device(client: httpx.AsyncClient, tenant: Tenant) -> tuple[str, dict[str, str]]:
    body = {"name": "door sensor", "serial_number": f"E-{uuid.uuid4().hex[:12]}"}
    response = await client.post("/api/v1/devices", headers=tenant.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], {"X-Device-Token": response.json()["access_token"]}


async def _stored(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(DeviceEvent)) or 0)


async def _events(
    client: httpx.AsyncClient, tenant: Tenant, device_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/api/v1/devices/{device_id}/events", params=params, headers=tenant.headers(Role.VIEWER)
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_device_posts_events_and_users_read_them(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await _device(client, tenant)
    now = int(time.time() * 1000)
    one = await client.post(
        POST,
        headers=token,
        json={"type": "door_open", "severity": "warning", "data": {"door": 1}, "ts": now - 60_000},
    )
    assert one.status_code == 201, one.text
    assert one.json() == {"stored": 1}
    many = await client.post(
        POST, headers=token, json=[{"type": "reboot", "ts": now - 120_000}, {"type": "heartbeat"}]
    )
    assert many.status_code == 201, many.text
    assert many.json() == {"stored": 2}
    assert await _stored(db) == 3

    page = await _events(client, tenant, device_id)
    assert [e["type"] for e in page["items"]] == ["heartbeat", "door_open", "reboot"]
    assert page["next_cursor"] is None
    door = page["items"][1]
    assert door["severity"] == "warning"
    assert door["data"] == {"door": 1}
    assert door["device_id"] == device_id
    assert datetime.fromisoformat(door["ts"]) == datetime.fromtimestamp((now - 60_000) / 1000, UTC)
    assert page["items"][0]["severity"] == "info"
    assert page["items"][0]["data"] == {}


async def test_bad_input_stores_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await _device(client, tenant)
    good = {"type": "door_open"}
    for body, code, details in [
        (
            [good, {"type": "x", "severity": "loud"}],
            "INVALID_EVENT",
            {"index": 1, "field": "severity"},
        ),
        ([good] * 101, "TOO_MANY_EVENTS", {"count": 101, "max": 100}),
        ({"type": "x", "data": "not an object"}, "INVALID_EVENT", {"index": None, "field": "data"}),
    ]:
        response = await client.post(POST, headers=token, json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["details"] == details
        assert error["request_id"]
    malformed = await client.post(POST, headers=token, content=b'[{"type": "x"}')
    assert malformed.status_code == 422
    assert malformed.json()["error"]["code"] == "BAD_JSON"
    too_big = await client.post(POST, headers=token, content=b" " * (2 * 1024 * 1024 + 1))
    assert too_big.status_code == 413
    assert await _stored(db) == 0


async def test_only_a_device_token_may_post(client: httpx.AsyncClient, tenant: Tenant) -> None:
    missing = await client.post(POST, json={"type": "a"})
    assert missing.status_code == 401
    wrong = await client.post(POST, headers={"X-Device-Token": "fcd_nope"}, json={"type": "a"})
    assert wrong.status_code == 401
    as_user = await client.post(POST, headers=tenant.headers(Role.ADMIN), json={"type": "a"})
    assert as_user.status_code == 401


async def test_filters_and_pages_newest_first(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device_id, token = await _device(client, tenant)
    now = int(time.time() * 1000)
    base = now - 100_000
    body = [
        {
            "type": "door_open" if i % 2 else "door_close",
            "severity": "minor" if i < 3 else "info",
            "ts": base + i * 1000,
        }
        for i in range(7)
    ]
    assert (await client.post(POST, headers=token, json=body)).status_code == 201
    # Same ts twice: the id keeps the order stable across pages.
    same = [{"type": "tie", "ts": base + 3000}, {"type": "tie", "ts": base + 3000}]
    assert (await client.post(POST, headers=token, json=same)).status_code == 201

    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await _events(client, tenant, device_id, **params)
        seen += [(e["ts"], e["id"]) for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 9
    assert seen == sorted(seen, reverse=True)
    assert len(set(seen)) == 9

    opened = await _events(client, tenant, device_id, type="door_open")
    assert [e["ts"] for e in opened["items"]] == sorted(
        (e["ts"] for e in opened["items"]), reverse=True
    )
    assert len(opened["items"]) == 3
    assert len((await _events(client, tenant, device_id, severity="minor"))["items"]) == 3
    since = datetime.fromtimestamp((base + 5000) / 1000, UTC).isoformat()
    until = datetime.fromtimestamp((base + 6000) / 1000, UTC).isoformat()
    window = await _events(client, tenant, device_id, since=since, until=until)
    assert [e["type"] for e in window["items"]] == ["door_open"]  # since inclusive, until not
    naive = datetime.fromtimestamp((base + 5000) / 1000, UTC).replace(tzinfo=None).isoformat()
    assert len((await _events(client, tenant, device_id, since=naive))["items"]) == 2

    bad_cursor = await client.get(
        f"/api/v1/devices/{device_id}/events",
        params={"cursor": "bm9wZQ"},
        headers=tenant.headers(Role.VIEWER),
    )
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["error"]["code"] == "INVALID_CURSOR"
    bad_severity = await client.get(
        f"/api/v1/devices/{device_id}/events",
        params={"severity": "loud"},
        headers=tenant.headers(Role.VIEWER),
    )
    assert bad_severity.status_code == 422


async def test_another_organization_sees_nothing(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device_id, token = await _device(client, tenant)
    _, other_token = await _device(client, other_tenant)
    assert (await client.post(POST, headers=token, json={"type": "mine"})).status_code == 201
    assert (
        await client.post(POST, headers=other_token, json={"type": "theirs"})
    ).status_code == 201
    response = await client.get(
        f"/api/v1/devices/{device_id}/events", headers=other_tenant.headers(Role.ADMIN)
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    page = await _events(client, tenant, device_id)
    assert [e["type"] for e in page["items"]] == ["mine"]


async def test_record_events_takes_the_ingest_cache_device(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """The MQTT path holds a cached IngestDevice, not an ORM row."""
    device_id, _ = await _device(client, tenant)
    device = IngestDevice(id=uuid.UUID(device_id), organization_id=tenant.org_id, profile=None)
    async with db.session() as session:
        stored = await record_events(session, device, _parse([{"type": "a"}, {"type": "b"}]))
        assert await record_events(session, device, []) == 0
    assert stored == 2
    page = await _events(client, tenant, device_id)
    assert sorted(e["type"] for e in page["items"]) == ["a", "b"]


class _Wanting:
    """A hook that owns events of one type and notes which events reach it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.checked: list[str] = []
        self.written: list[list[str]] = []

    def wants(self, event: EventIn) -> bool:
        return event.type == self.kind

    def check(self, event: EventIn, index: int | None) -> None:
        self.checked.append(event.type)

    async def stored(self, session: Any, device: Any, events: Any) -> None:
        self.written.append([event.type for event in events])


async def test_a_hook_sees_only_payloads_with_an_event_it_wants(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, _ = await _device(client, tenant)
    device = IngestDevice(id=uuid.UUID(device_id), organization_id=tenant.org_id, profile=None)
    hook = _Wanting("door")
    async with db.session() as session:
        plain = await record_events(session, device, _parse([{"type": "a"}]), [hook])
        mixed = _parse([{"type": "b"}, {"type": "door"}])
        both = await record_events(session, device, mixed, [hook])
    assert (plain, both) == (1, 2)
    # The plain payload never reached the hook; the mixed one did, whole (its contract).
    assert hook.checked == ["b", "door"]
    assert hook.written == [["b", "door"]]
    page = await _events(client, tenant, device_id)
    assert sorted(e["type"] for e in page["items"]) == ["a", "b", "door"]
