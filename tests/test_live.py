"""Live data over /api/v1/ws: real uvicorn, real WebSocket client, real ingest."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from fastapi import FastAPI
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.live.hub import InProcessHub, LiveEvent, Subscriber
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


@pytest.fixture
async def app_url(live_database: Database, tmp_path: Path) -> AsyncIterator[tuple[FastAPI, str]]:
    async with running_app(live_database, tmp_path) as application, serving(application) as url:
        yield application, url


@pytest.fixture
async def http(app_url: tuple[FastAPI, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app_url[0]) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def ask(ws: ClientConnection, **request: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps(request).decode())
    answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    return answer


async def receive(ws: ClientConnection, wait_s: float = 5) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), wait_s))
    return message


def metric(name: str) -> float:
    """A sample of this process's /metrics (0 when absent)."""
    return REGISTRY.get_sample_value(name) or 0.0


async def test_live_telemetry_for_a_subscribed_device(
    app_url: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    other_id, other_token = await new_device(http, org)
    url = f"ws://{app_url[1]}/api/v1/ws?token={org.tokens[Role.VIEWER]}"
    async with connect(url) as ws:
        subscribed = await ask(
            ws, type="subscribe", channel="telemetry", device_id=device_id, keys=["t"]
        )
        assert subscribed == {
            "type": "subscribed",
            "channel": "telemetry",
            "device_id": device_id,
            "keys": ["t"],
        }
        await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": other_token}, json={"t": 1}
        )
        started = time.monotonic()
        posted = await http.post(
            "/api/v1/devices/me/telemetry",
            headers={"X-Device-Token": token},
            json={"ts": 1_795_300_000_000, "values": {"t": 21.5, "h": 40}},
        )
        assert posted.status_code == 200, posted.text
        message = await receive(ws)
        assert time.monotonic() - started < 5
        assert message == {
            "type": "telemetry",
            "device_id": device_id,
            "ts": 1_795_300_000_000,
            "values": {"t": 21.5},
        }
        unsubscribed = await ask(ws, type="unsubscribe", channel="telemetry", device_id=device_id)
        assert unsubscribed["type"] == "unsubscribed"
        await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json={"t": 2}
        )
        with pytest.raises(TimeoutError):
            await receive(ws, wait_s=0.5)
    assert other_id != device_id


async def test_organization_wide_subscription_sees_only_its_organization(
    app_url: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    mine, my_token = await new_device(http, org)
    other = await make_tenant(http, live_database)
    theirs, their_token = await new_device(http, other)
    async with connect(f"ws://{app_url[1]}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws:
        assert (await ask(ws, type="subscribe", channel="telemetry"))["type"] == "subscribed"
        refused = await ask(ws, type="subscribe", channel="telemetry", device_id=theirs)
        assert refused["type"] == "error"
        assert refused["code"] == "DEVICE_NOT_FOUND"
        await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": their_token}, json={"x": 1}
        )
        await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": my_token}, json={"x": 2}
        )
        message = await receive(ws)
        assert (message["device_id"], message["values"]) == (mine, {"x": 2})


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ("not json", "MALFORMED_JSON"),
        ("[1]", "INVALID_MESSAGE"),
        ('{"type": "shout"}', "INVALID_MESSAGE"),
        ('{"type": "subscribe", "channel": "gossip"}', "INVALID_CHANNEL"),
        ('{"type": "subscribe", "channel": "telemetry", "device_id": "nope"}', "DEVICE_NOT_FOUND"),
        ('{"type": "subscribe", "channel": "telemetry", "keys": "t"}', "INVALID_KEYS"),
        ("x" * 5000, "MESSAGE_TOO_LARGE"),
    ],
)
async def test_bad_client_messages_get_an_error_and_the_socket_stays(
    app_url: tuple[FastAPI, str], org: Tenant, request_: str, code: str
) -> None:
    async with connect(f"ws://{app_url[1]}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws:
        await ws.send(request_)
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", code)
        assert (await ask(ws, type="subscribe", channel="status"))["type"] == "subscribed"


async def test_without_credentials_the_socket_is_refused(
    app_url: tuple[FastAPI, str], org: Tenant
) -> None:
    for url in (
        f"ws://{app_url[1]}/api/v1/ws",
        f"ws://{app_url[1]}/api/v1/ws?token=not-a-token",
    ):
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with connect(url):
                pass


async def test_cookie_auth_needs_the_same_origin(
    app_url: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant
) -> None:
    cookie = f"fleetcore_session={org.tokens[Role.VIEWER]}"
    host = app_url[1]
    async with connect(
        f"ws://{host}/api/v1/ws", additional_headers={"Cookie": cookie}, origin=f"http://{host}"
    ) as ws:
        assert (await ask(ws, type="subscribe", channel="alerts"))["type"] == "subscribed"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(
            f"ws://{host}/api/v1/ws",
            additional_headers={"Cookie": cookie},
            origin="http://evil.example.com",
        ):
            pass


def test_a_slow_subscriber_is_told_it_lagged_and_gets_the_newest() -> None:
    skipped, notices = metric(SKIPPED), metric(LAGGED)
    buffered = metric(BUFFERED)
    hub, org, device = InProcessHub(), uuid.uuid4(), uuid.uuid4()
    slow = Subscriber(org, max_buffer=10)
    hub.subscribe(slow, "telemetry", device)
    for n in range(25):
        hub.publish(
            LiveEvent(org, "telemetry", device, {"type": "telemetry", "values": {"n": n}, "ts": n})
        )
    assert slow.pending == 5
    assert metric(SKIPPED) == skipped + 20
    assert metric(BUFFERED) == buffered + 5

    async def drain() -> list[dict[str, Any]]:
        return [orjson.loads(await slow.next()) for _ in range(6)]

    got = asyncio.run(drain())
    assert got[0] == {"type": "lagged", "skipped": 20}
    assert [m["values"]["n"] for m in got[1:]] == [20, 21, 22, 23, 24]
    assert metric(LAGGED) == notices + 1
    assert metric(BUFFERED) == buffered


async def test_a_client_that_stops_reading_does_not_hold_up_the_others(
    app_url: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant
) -> None:
    """Each socket has its own sender and buffer: while one client reads nothing, another
    gets every message; the first gets them all, in order, once it reads again."""
    application, address = app_url
    device_id, _ = await new_device(http, org)
    url = f"ws://{address}/api/v1/ws?token={org.tokens[Role.VIEWER]}"
    hub: InProcessHub = application.state.live
    # max_queue=1: the client stops reading its socket after a frame it was not asked for
    async with connect(url, max_queue=1) as slow, connect(url) as fast:
        for ws in (slow, fast):
            await ask(ws, type="subscribe", channel="telemetry", device_id=device_id)
        padding = "x" * 65_536
        count = 200  # 13 MB
        for n in range(count):
            message = {"type": "telemetry", "ts": n, "values": {"n": n, "pad": padding}}
            hub.publish(LiveEvent(org.org_id, "telemetry", uuid.UUID(device_id), message))
            await asyncio.sleep(0)
        got = [(await receive(fast, wait_s=30))["values"]["n"] for _ in range(count)]
        assert got == list(range(count))
        assert [(await receive(slow, wait_s=30))["values"]["n"] for _ in range(count)] == got


CLIENTS, SENT = "fleetcore_live_websocket_clients", "fleetcore_live_messages_sent_total"
SKIPPED, LAGGED = "fleetcore_live_messages_skipped_total", "fleetcore_live_lagged_notices_total"
BUFFERED = "fleetcore_live_buffered_messages"


async def test_websocket_clients_and_the_messages_they_are_sent_are_counted(
    app_url: tuple[FastAPI, str], http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    clients, sent = metric(CLIENTS), metric(SENT)
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with connect(f"ws://{app_url[1]}/api/v1/ws?token=not-a-token"):
            pass
    assert metric(CLIENTS) == clients  # refused: never a client
    async with connect(f"ws://{app_url[1]}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws:
        await wait_until(lambda: metric(CLIENTS) == clients + 1)
        await ask(ws, type="subscribe", channel="telemetry", device_id=device_id)
        assert metric(SENT) == sent  # answers to the client's own requests are not live data
        await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json={"t": 1}
        )
        assert (await receive(ws))["values"] == {"t": 1}
        await wait_until(lambda: metric(SENT) == sent + 1)
    await wait_until(lambda: metric(CLIENTS) == clients)


def test_hub_delivers_once_per_subscriber_and_forgets_detached_ones() -> None:
    hub, org, device = InProcessHub(), uuid.uuid4(), uuid.uuid4()
    both = Subscriber(org)
    hub.subscribe(both, "status", device)
    hub.subscribe(both, "status", None)
    stranger = Subscriber(uuid.uuid4())
    hub.subscribe(stranger, "status", None)
    hub.publish(LiveEvent(org, "status", device, {"type": "status"}))
    assert (both.pending, stranger.pending) == (1, 0)
    assert hub.wanted(org, "status")
    hub.detach(both)
    assert not hub.wanted(org, "status")
    hub.publish(LiveEvent(org, "status", device, {"type": "status"}))
    assert both.pending == 1
