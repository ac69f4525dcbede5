"""Dead letters: the sink (bounded, batched, survives the database, loses nothing before stop)
and the organization-scoped API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import delete, func, select

from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.deadletters.models import DeadLetter
from fleetcore.deadletters.sink import DeadLetterSink, excerpt
from fleetcore.devices.models import Device
from tests.conftest import running_app
from tests.support.postgres import PostgresServer
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

LIST = "/api/v1/dead-letters"


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _record(sink: DeadLetterSink, payload: bytes = b"{oops", **fields: Any) -> None:
    values: dict[str, Any] = {
        "organization_id": None,
        "device_id": None,
        "transport": "mqtt",
        "topic": "devices/x/telemetry",
        "reason": "bad_json",
        "detail": "the payload is not valid JSON",
        "payload": payload,
        **fields,
    }
    sink.record(**values)


async def _rows(db: Database) -> list[DeadLetter]:
    async with db.session() as session:
        return list((await session.scalars(select(DeadLetter).order_by(DeadLetter.id))).all())


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(DeadLetter)) or 0)


# -- the excerpt ---------------------------------------------------------------------------


def test_excerpt_is_the_first_kib_as_text() -> None:
    assert excerpt(b'{"t": 1}') == '{"t": 1}'
    assert excerpt(b"a" * 5000) == "a" * 1024
    assert excerpt(b"a\x00b") == "a\ufffdb"
    assert excerpt(b"ok \xff\xfe end") == "ok \ufffd\ufffd end"
    # A three-byte character cut by the 1024-byte limit is left out, not mangled.
    assert excerpt(b"a" * 1022 + "€".encode() + b"tail") == "a" * 1022
    # An incomplete character at the true end of a short payload is bad UTF-8.
    assert excerpt(b"ab\xe2\x82") == "ab\ufffd"


# -- the sink on a real database -----------------------------------------------------------


async def test_stop_writes_everything_recorded(live_database: Database) -> None:
    sink = DeadLetterSink(live_database, batch_size=500, flush_interval_s=60)
    await sink.start()
    before = _metric("fleetcore_dead_letters_total", transport="mqtt", reason="bad_json")
    big = b"\x00\xff" + b"z" * 4000
    _record(sink, payload=big, topic="t" * 600, detail="d\x00" * 1500)
    for i in range(1199):
        _record(sink, payload=f'{{"n": {i}'.encode())
    await sink.stop()  # one tick never came: stop() must write all 1200, in batches
    after = _metric("fleetcore_dead_letters_total", transport="mqtt", reason="bad_json")
    assert after - before == 1200
    rows = await _rows(live_database)
    assert len(rows) == 1200
    first = rows[0]
    assert first.payload_size == len(big)
    assert first.payload_excerpt == "\ufffd\ufffd" + "z" * 1022
    assert len(first.topic or "") == 512
    assert len(first.detail) == 2000
    assert "\x00" not in first.detail
    assert first.organization_id is None
    assert first.transport == "mqtt"
    assert first.received_at.tzinfo is not None
    assert rows[-1].payload_excerpt == '{"n": 1198'
    assert sink.buffered == 0


async def test_background_writer_flushes_on_its_own(live_database: Database) -> None:
    sink = DeadLetterSink(live_database, flush_interval_s=0.05)
    await sink.start()
    try:
        _record(sink, reason="unknown_topic", transport="mqtt", topic="nowhere/else")
        await wait_until(_has_rows(live_database, 1), within=10)
        (row,) = await _rows(live_database)
        assert row.reason == "unknown_topic"
        assert row.topic == "nowhere/else"
    finally:
        await sink.stop()


def _has_rows(db: Database, n: int) -> Any:
    async def check() -> bool:
        return await _count(db) == n

    return check


async def test_full_buffer_drops_and_counts(live_database: Database) -> None:
    sink = DeadLetterSink(live_database, max_buffered=3)  # not started: nothing drains it
    dropped = _metric("fleetcore_dead_letters_dropped_total")
    total = _metric("fleetcore_dead_letters_total", transport="http", reason="oversize")
    for _ in range(5):
        _record(sink, transport="http", reason="oversize")
    assert sink.buffered == 3
    assert _metric("fleetcore_dead_letters_dropped_total") - dropped == 2
    assert _metric("fleetcore_dead_letters_total", transport="http", reason="oversize") - total == 5
    await sink.stop()
    assert await _count(live_database) == 3
    _record(sink)  # after stop: counted, not kept
    assert sink.buffered == 0
    assert _metric("fleetcore_dead_letters_dropped_total") - dropped == 3


async def test_a_row_the_database_refuses_does_not_block_the_rest(
    live_database: Database,
) -> None:
    sink = DeadLetterSink(live_database)
    dropped = _metric("fleetcore_dead_letters_dropped_total")
    _record(sink, reason="first")
    _record(sink, reason="ghost", device_id=uuid.uuid4())  # no such device: FK violation
    _record(sink, reason="last")
    assert await sink.flush() == 2
    assert [r.reason for r in await _rows(live_database)] == ["first", "last"]
    assert sink.buffered == 0
    assert _metric("fleetcore_dead_letters_dropped_total") - dropped == 1


@pytest.fixture
async def unmigrated_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """A database without the schema yet: every write fails until it is migrated."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    else:
        server: PostgresServer | None = request.getfixturevalue("postgres_server")
        if server is None:
            pytest.fail("an external FLEETCORE_TEST_DATABASE_URL cannot host a fresh database")
        url = server.create_database(f"dl_{uuid.uuid4().hex[:12]}")
    database = Database.from_url(url, pool_size=2)
    try:
        yield database
    finally:
        await database.close()


async def test_database_errors_are_retried_and_never_kill_the_writer(
    unmigrated_database: Database,
) -> None:
    db = unmigrated_database
    sink = DeadLetterSink(db, flush_interval_s=0.02)
    failures = _metric("fleetcore_dead_letters_write_failures_total")
    _record(sink, reason="early")
    assert await sink.flush() == 0  # no table yet: logged, kept
    assert sink.buffered == 1
    await sink.start()
    try:
        await wait_until(
            lambda: _metric("fleetcore_dead_letters_write_failures_total") - failures >= 3
        )
        assert sink.buffered == 1
        await migrate.upgrade(db)  # the database comes back
        await wait_until(lambda: sink.buffered == 0)
        _record(sink, reason="late")
        await wait_until(_has_rows(db, 2))
        assert [r.reason for r in await _rows(db)] == ["early", "late"]
    finally:
        await sink.stop()


# -- the API -------------------------------------------------------------------------------


async def _letters(
    client: httpx.AsyncClient, tenant: Tenant, role: Role = Role.VIEWER, **params: Any
) -> dict[str, Any]:
    response = await client.get(LIST, params=params, headers=tenant.headers(role))
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _device(client: httpx.AsyncClient, tenant: Tenant) -> uuid.UUID:
    body = {"name": "meter", "serial_number": f"D-{uuid.uuid4().hex[:12]}"}
    response = await client.post("/api/v1/devices", headers=tenant.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def test_each_organization_sees_only_its_own(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    sink: DeadLetterSink = app.state.dead_letters
    device = await _device(client, tenant)
    _record(sink, organization_id=tenant.org_id, device_id=device, detail="A's")
    _record(sink, organization_id=other_tenant.org_id, detail="B's")
    _record(sink, detail="nobody's")  # an unauthenticated connection
    await sink.flush()

    mine = (await _letters(client, tenant))["items"]
    assert [d["detail"] for d in mine] == ["A's"]
    assert mine[0]["device_id"] == str(device)
    assert mine[0]["organization_id"] == str(tenant.org_id)
    assert mine[0]["payload_excerpt"] == "{oops"
    assert mine[0]["payload_size"] == 5
    theirs = (await _letters(client, other_tenant))["items"]
    assert [d["detail"] for d in theirs] == ["B's"]

    url = f"{LIST}/{mine[0]['id']}"
    assert (await client.get(url, headers=tenant.headers(Role.VIEWER))).json() == mine[0]
    stolen = await client.get(url, headers=other_tenant.headers(Role.ADMIN))
    assert stolen.status_code == 404
    assert stolen.json()["error"]["code"] == "DEAD_LETTER_NOT_FOUND"
    async with app.state.database.session() as session:
        nobodys = await session.scalar(select(DeadLetter.id).where(DeadLetter.detail == "nobody's"))
    for tenant_ in (tenant, other_tenant):
        hidden = await client.get(f"{LIST}/{nobodys}", headers=tenant_.headers(Role.ADMIN))
        assert hidden.status_code == 404
    assert (await client.get(LIST)).status_code == 401


async def test_filters_and_pages_newest_first(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    sink: DeadLetterSink = app.state.dead_letters
    device = await _device(client, tenant)
    org = tenant.org_id
    for i in range(7):
        _record(sink, organization_id=org, device_id=device, reason="bad_json", detail=f"j{i}")
    _record(sink, organization_id=org, reason="oversize", transport="http", detail="h")
    _record(sink, organization_id=org, reason="rate_limited", detail="r")
    await sink.flush()

    details: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = await _letters(client, tenant, **params)
        details += [d["detail"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert details == ["r", "h", "j6", "j5", "j4", "j3", "j2", "j1", "j0"]
    assert pages == 3

    by_device = await _letters(client, tenant, device_id=str(device))
    assert len(by_device["items"]) == 7
    assert [d["detail"] for d in (await _letters(client, tenant, reason="oversize"))["items"]] == [
        "h"
    ]
    assert [d["detail"] for d in (await _letters(client, tenant, transport="http"))["items"]] == [
        "h"
    ]
    everything = (await _letters(client, tenant))["items"]
    pivot = everything[4]["received_at"]  # j4
    newer = await _letters(client, tenant, since=pivot)
    older = await _letters(client, tenant, until=pivot)
    assert {d["detail"] for d in newer["items"]} >= {"r", "h", "j6", "j5", "j4"}
    assert "j4" not in {d["detail"] for d in older["items"]}
    assert len(newer["items"]) + len(older["items"]) == 9

    bad = await client.get(LIST, params={"cursor": "bm9wZQ"}, headers=tenant.headers())
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "INVALID_CURSOR"
    wrong_transport = await client.get(LIST, params={"transport": "coap"}, headers=tenant.headers())
    assert wrong_transport.status_code == 422


async def test_dead_letters_outlive_their_device(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    """A device removed for good leaves its dead letters, with device_id cleared."""
    sink: DeadLetterSink = app.state.dead_letters
    device = await _device(client, tenant)
    _record(sink, organization_id=tenant.org_id, device_id=device)
    await sink.flush()
    async with db.session() as session:
        await session.execute(delete(Device).where(Device.id == device))
        await session.commit()
    (letter,) = (await _letters(client, tenant))["items"]
    assert letter["device_id"] is None


async def test_the_app_stops_the_sink_after_writing_it_out(db: Database, tmp_path: Path) -> None:
    async with running_app(db, tmp_path) as application:
        sink: DeadLetterSink = application.state.dead_letters
        async with db.session() as session:
            org = await users.create_organization(
                session, None, data=OrganizationIn(name="dl", slug=f"dl-{uuid.uuid4().hex[:8]}")
            )
        _record(sink, organization_id=org.id, reason="stopping")
    async with db.session() as session:
        reasons = (await session.scalars(select(DeadLetter.reason))).all()
    assert list(reasons) == ["stopping"]
