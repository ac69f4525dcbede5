"""What several processes share through Redis (FLEETCORE_REDIS_URL), against a real
redis-server: two apps on one PostgreSQL database (each with its own pool and its own link
to Redis) in this test process, and a real `fleetcore serve` process where process-wide
state (the device-token cache) would make two apps in one process prove nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection, connect

from fleetcore.auth.principal import Role
from fleetcore.cluster.locks import RedisDeviceLocks
from fleetcore.db import Database, create_engine, utcnow
from fleetcore.devices.models import Device
from tests.conftest import _live_pg_engine, _truncate_all, client_for, running_app
from tests.support.devices import new_device
from tests.support.faults import KEY, ServerProcess, read_storage
from tests.support.http_clients import local_client
from tests.support.mqtt_raw import RawClient
from tests.support.postgres import free_port
from tests.support.redis import RedisServer
from tests.support.rules import HOT, T0, make_rule, wait_for_alerts
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant
from tests.support.wait import wait_until
from tests.test_live import ask


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Cluster:
    """Two apps sharing one database and one Redis; app 1 served for WebSockets."""

    one: FastAPI
    two: FastAPI
    url_one: str  # host:port of app 1's uvicorn
    http_one: httpx.AsyncClient
    http_two: httpx.AsyncClient
    org: Tenant
    database_url: str


@pytest.fixture
async def cluster(
    live_pg_url: str, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    engine_one = await _live_pg_engine(live_pg_url)
    engine_two = create_engine(live_pg_url, pool_size=5)  # its own pool, as another process
    shared = {
        "redis_url": redis_server.url,
        "login_max_failures_per_account": 3,
        "presence_sweep_s": 3600,  # the tests sweep by hand
    }
    try:
        async with AsyncExitStack() as stack:
            one = await stack.enter_async_context(
                running_app(Database(engine_one), tmp_path / "one", **shared)
            )
            two = await stack.enter_async_context(
                running_app(Database(engine_two), tmp_path / "two", mqtt_port=free_port(), **shared)
            )
            url_one = await stack.enter_async_context(serving(one))
            http_one = await stack.enter_async_context(client_for(one))
            http_two = await stack.enter_async_context(client_for(two))
            await wait_until(lambda: one.state.live.link.up and two.state.live.link.up)
            org = await make_tenant(http_one, Database(engine_one))
            yield Cluster(one, two, url_one, http_one, http_two, org, live_pg_url)
            await RawClient.close_all()
    finally:
        await engine_two.dispose()
        await _truncate_all(engine_one)


async def next_of(ws: ClientConnection, kind: str, wait_s: float = 5) -> dict[str, Any]:
    """The next message of this type (others skipped)."""
    async with asyncio.timeout(wait_s):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def first_of(ws: ClientConnection, *kinds: str, wait_s: float = 5) -> dict[str, Any]:
    """The first message of each type, whatever order they come in."""
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(wait_s):
            while set(kinds) - set(found):
                message: dict[str, Any] = orjson.loads(await ws.recv())
                found.setdefault(message["type"], message)
    except TimeoutError:
        raise AssertionError(f"only {found} within {wait_s}s") from None
    return found


async def post(http: httpx.AsyncClient, token: str, **values: Any) -> httpx.Response:
    return await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=values
    )


async def test_events_caused_on_one_process_reach_a_websocket_on_another(
    cluster: Cluster,
) -> None:
    c = cluster
    org_id = c.org.org_id
    device_id, token = await new_device(c.http_one, c.org)
    # Made where the readings arrive: a rules engine learns of rule changes in its process.
    await make_rule(c.http_two, c.org, device_id=device_id, condition=HOT)
    ws_url = f"ws://{c.url_one}/api/v1/ws?token={c.org.tokens[Role.VIEWER]}"
    async with connect(ws_url) as ws:
        for channel in ("telemetry", "status", "alerts", "commands"):
            subscribed = await ask(ws, type="subscribe", channel=channel, device_id=device_id)
            assert subscribed["type"] == "subscribed"
        # App 2 learns of the interest through Redis before it builds anything for it.
        await wait_until(
            lambda: all(
                c.two.state.live.wanted(org_id, ch)
                for ch in ("telemetry", "status", "alerts", "commands")
            )
        )
        assert (await post(c.http_two, token, t=35)).status_code == 200  # hot: an alert
        got = await first_of(ws, "telemetry", "status", "alert")
        telemetry, status, pushed = got["telemetry"], got["status"], got["alert"]
        assert (telemetry["device_id"], telemetry["values"]) == (device_id, {"t": 35})
        assert (status["device_id"], status["status"]) == (device_id, "online")
        [alert] = await wait_for_alerts(c.http_two, c.org, 1, device_id=device_id)
        assert pushed["alert"]["id"] == alert["id"]
        created = await c.http_two.post(
            f"/api/v1/devices/{device_id}/commands",
            headers=c.org.headers(Role.OPERATOR),
            json={"method": "reboot", "persistent": True},
        )
        assert created.status_code == 201, created.text
        command = await next_of(ws, "command")
        assert command["id"] == created.json()["id"]
    # The socket closed: app 2 stops wanting the channels once app 1 says so.
    await wait_until(lambda: not c.two.state.live.wanted(org_id, "telemetry"))


async def test_nothing_goes_to_redis_for_channels_nobody_wants(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    c = cluster
    device_id, token = await new_device(c.http_one, c.org)
    spy = Redis.from_url(redis_server.url)
    watch = spy.pubsub()
    await watch.psubscribe("fleetcore:live:*")
    try:
        assert not c.two.state.live.listening("telemetry")
        for n in range(20):
            assert (await post(c.http_two, token, ts=T0 + n, values={"t": n})).status_code == 200
        await wait_until(lambda: c.two.state.pipeline.pending == 0)
        # Now someone listens on app 1: the next reading goes through Redis, after any the
        # quiet phase could have sent (one publisher queue, one Redis connection: in order).
        ws_url = f"ws://{c.url_one}/api/v1/ws?token={c.org.tokens[Role.VIEWER]}"
        async with connect(ws_url) as ws:
            await ask(ws, type="subscribe", channel="telemetry", device_id=device_id)
            await wait_until(lambda: c.two.state.live.wanted(c.org.org_id, "telemetry"))
            assert (
                await post(c.http_two, token, ts=T0 + 100_000, values={"t": 99})
            ).status_code == 200
            assert (await next_of(ws, "telemetry"))["values"] == {"t": 99}
        seen = []
        while (message := await watch.get_message(timeout=0.5)) is not None:
            if message["type"] == "pmessage":
                seen.append(message["data"])
        assert len(seen) == 1, seen
        assert b'"t":99' in seen[0]
    finally:
        await watch.aclose()  # type: ignore[no-untyped-call]
        await spy.aclose()


async def test_login_failures_on_one_process_count_on_the_other(cluster: Cluster) -> None:
    c = cluster
    email = c.org.emails[Role.VIEWER]
    for _ in range(3):
        wrong = await c.http_one.post(
            "/api/v1/auth/login", json={"email": email, "password": "x" * 12}
        )
        assert wrong.status_code == 401
    blocked = await c.http_two.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert blocked.status_code == 429, blocked.text
    assert blocked.json()["error"]["code"] == "LOGIN_RATE_LIMITED"


async def test_presence_is_the_same_on_every_process(cluster: Cluster) -> None:
    c = cluster
    device_id, token = await new_device(c.http_one, c.org)
    quiet_id, quiet_token = await new_device(c.http_one, c.org)
    device, quiet = uuid.UUID(device_id), uuid.UUID(quiet_id)
    assert not c.one.state.presence.is_online(device)
    # Traffic on app 2: app 1 knows the devices are online (and a command created there is
    # queued, not failed as offline).
    assert (await post(c.http_two, token, t=1)).status_code == 200
    assert (await post(c.http_two, quiet_token, t=1)).status_code == 200
    await wait_until(lambda: c.one.state.presence.is_online(device))
    await wait_until(lambda: c.one.state.presence.is_online(quiet))
    created = await c.http_one.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=c.org.headers(Role.OPERATOR),
        json={"method": "reboot"},
    )
    assert created.json()["status"] == "queued", created.text
    # Connected over MQTT to app 2 and silent for an hour: app 1's sweep leaves it online
    # (app 2 holds its connection); the silent device connected nowhere goes offline, on
    # every process.
    mqtt = await RawClient.connected(int(c.two.state.settings.mqtt_port), "dev-1", username=token)

    async def held_on_two() -> bool:
        return await c.one.state.presence.share.held_elsewhere([device, quiet]) == {device}

    await wait_until(held_on_two)
    await c.two.state.presence.sweep()  # last-seen times written now, not later
    engine = create_engine(c.database_url, pool_size=1)
    try:
        async with Database(engine).session() as session:
            await session.execute(
                update(Device)
                .where(Device.id.in_([device, quiet]))
                .values(last_seen_at=utcnow() - timedelta(hours=1))
            )
            await session.commit()
        assert await c.one.state.presence.sweep() == 1  # the quiet one only
        await wait_until(lambda: not c.two.state.presence.is_online(quiet))
        assert c.one.state.presence.is_online(device)
        assert c.two.state.presence.is_online(device)
        async with Database(engine).session() as session:
            rows = (await session.execute(select(Device.id, Device.connectivity))).all()
            stored = {row.id: row.connectivity for row in rows}
        assert (stored[device], stored[quiet]) == ("online", "offline")
    finally:
        await mqtt.close()
        await engine.dispose()


async def test_the_command_lock_excludes_other_processes(cluster: Cluster) -> None:
    c = cluster
    device = uuid.uuid4()
    key = f"fleetcore:lock:device:{device}"
    client = c.one.state.live.link.client
    one = RedisDeviceLocks(c.one.state.live.link)
    two = RedisDeviceLocks(c.two.state.live.link)
    order: list[str] = []
    first_in, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with one.hold(device) as shared:
            assert shared
            order.append("one in")
            first_in.set()
            await release.wait()
            order.append("one out")

    async def waiter() -> None:
        async with two.hold(device) as shared:
            assert shared
            order.append("two in")

    first = asyncio.create_task(holder())
    await first_in.wait()
    second = asyncio.create_task(waiter())
    await wait_until(lambda: two._local.hold(device).locked())  # it is trying Redis now
    assert order == ["one in"]
    release.set()
    await asyncio.gather(first, second)
    assert order == ["one in", "one out", "two in"]
    assert await client.get(key) is None

    # A holder whose lock expired does not delete the next holder's when it leaves.
    short = RedisDeviceLocks(c.one.state.live.link, ttl_ms=100)
    short_in, short_leaves = asyncio.Event(), asyncio.Event()

    async def short_holder() -> None:
        async with short.hold(device):
            short_in.set()
            await short_leaves.wait()

    expiring = asyncio.create_task(short_holder())
    await short_in.wait()
    async with two.hold(device) as shared:  # waits for the expiry
        assert shared
        mine = await client.get(key)
        short_leaves.set()
        await expiring
        assert await client.get(key) == mine
    assert await client.get(key) is None


async def test_a_disabled_token_stops_working_on_another_process_within_a_second(
    cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    # A real second process: the token cache is process-wide, so a second app in this
    # process would see the change without Redis.
    c = cluster
    server = ServerProcess(
        tmp_path / "serve", database_url=c.database_url, redis_url=redis_server.url
    )
    await server.start()
    try:
        device_id, token = await new_device(c.http_one, c.org)
        async with local_client(base_url=server.base, timeout=5) as other:

            async def linked() -> bool:
                return (await other.get("/ready")).json()["checks"].get("redis") == "ok"

            await wait_until(linked)
            assert (await post(other, token, t=1)).status_code == 200  # cached there (5 s)
            disabled = await c.http_one.patch(
                f"/api/v1/devices/{device_id}",
                headers=c.org.headers(Role.MANAGER),
                json={"status": "disabled"},
            )
            assert disabled.status_code == 200, disabled.text

            async def refused() -> bool:
                return (await post(other, token, t=2)).status_code == 401

            await wait_until(refused, within=1.0, every=0.02)
    finally:
        await server.stop()


async def test_redis_stopped_mid_stream_degrades_and_recovers(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    c = cluster
    device_id, token = await new_device(c.http_one, c.org)
    posted: list[int] = []
    refused: list[str] = []
    stop = asyncio.Event()

    async def stream() -> None:
        n = 0
        while not stop.is_set():
            answer = await post(c.http_two, token, ts=T0 + n, values={KEY: n})
            if answer.status_code == 200:
                posted.append(n)
            else:
                refused.append(answer.text)
            n += 1
            await asyncio.sleep(0.005)  # pacing, not waiting: a device's steady rate

    async def ready(app: FastAPI, redis: str) -> bool:
        async with client_for(app) as http:
            answer = await http.get("/ready")
        return answer.status_code == 200 and answer.json()["checks"]["redis"] == redis

    ws_url = f"ws://{c.url_one}/api/v1/ws?token={c.org.tokens[Role.VIEWER]}"
    async with connect(ws_url) as ws:
        await ask(ws, type="subscribe", channel="telemetry", device_id=device_id)
        await wait_until(lambda: c.two.state.live.wanted(c.org.org_id, "telemetry"))
        sender = asyncio.create_task(stream())
        try:
            await next_of(ws, "telemetry")  # app 2's readings reach app 1's socket
            redis_server.stop()
            assert (await next_of(ws, "paused"))["reason"] == "redis"
            await wait_until(lambda: ready(c.one, "degraded"))
            await wait_until(lambda: ready(c.two, "degraded"))
            during = len(posted)
            await wait_until(lambda: len(posted) >= during + 20)  # ingest goes on
            wrong = await c.http_one.post(
                "/api/v1/auth/login",
                json={"email": c.org.emails[Role.ADMIN], "password": "x" * 12},
            )
            assert wrong.status_code == 401  # limits counted in memory meanwhile
            redis_server.start()
            resumed = await next_of(ws, "lagged", wait_s=15)
            assert resumed == {"type": "lagged", "skipped": None, "reason": "redis"}
            await wait_until(lambda: ready(c.one, "ok"))
            await wait_until(lambda: ready(c.two, "ok"))
            after = len(posted)
            async with asyncio.timeout(15):
                while True:  # live pushes resume: a reading posted after the restart arrives
                    message = await next_of(ws, "telemetry")
                    if message["values"][KEY] >= after:
                        break
        finally:
            stop.set()
            await sender
    assert refused == []
    await wait_until(lambda: c.two.state.pipeline.pending == 0)
    stored = await read_storage(c.database_url)
    mine = {ts for device, ts in stored.rows if device == uuid.UUID(device_id)}
    assert mine == {T0 + n for n in posted}
    assert len(posted) > 40
