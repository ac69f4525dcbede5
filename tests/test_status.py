"""Device presence: online/offline from MQTT and traffic, recorded, pushed live, no flapping."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from websockets.asyncio.client import connect

from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.devices import auth_cache
from fleetcore.devices.models import Device
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.mqtt_raw import RawClient
from tests.support.postgres import free_port
from tests.support.serving import serving
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


@pytest.fixture
async def app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async with running_app(
        live_database, tmp_path, mqtt_port=free_port(), presence_sweep_s=3600
    ) as application:
        yield application
        await RawClient.close_all()


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def history(http: httpx.AsyncClient, org: Tenant, device_id: str) -> list[tuple[str, str]]:
    response = await http.get(f"/api/v1/devices/{device_id}/status-history", headers=org.headers())
    assert response.status_code == 200, response.text
    return [(c["status"], c["reason"]) for c in reversed(response.json()["items"])]


async def connectivity(http: httpx.AsyncClient, org: Tenant, device_id: str) -> str:
    response = await http.get(f"/api/v1/devices/{device_id}", headers=org.headers())
    return str(response.json()["connectivity"])


def port(app: FastAPI) -> int:
    return int(app.state.settings.mqtt_port)


async def test_connect_disconnect_and_will_are_recorded(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    assert await connectivity(http, org, device_id) == "never"
    polite = await RawClient.connected(port(app), "a", username=token)
    await wait_until(lambda: _is(http, org, device_id, "online"))
    await polite.disconnect()
    await wait_until(lambda: _is(http, org, device_id, "offline"))
    abrupt = await RawClient.connected(port(app), "a", username=token)
    await wait_until(lambda: _is(http, org, device_id, "online"))
    await abrupt.close()
    await wait_until(lambda: _is(http, org, device_id, "offline"))
    assert await history(http, org, device_id) == [
        ("online", "connect"),
        ("offline", "disconnect"),
        ("online", "connect"),
        ("offline", "will"),
    ]


async def _is(http: httpx.AsyncClient, org: Tenant, device_id: str, state: str) -> bool:
    return await connectivity(http, org, device_id) == state


async def _history_is(
    http: httpx.AsyncClient, org: Tenant, device_id: str, expected: list[tuple[str, str]]
) -> bool:
    return await history(http, org, device_id) == expected


async def test_reconnect_races_do_not_flap(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    presence, device = app.state.presence, uuid.UUID(device_id)
    first = await RawClient.connected(port(app), "same", username=token, clean=False)
    second_connection = await RawClient.connected(port(app), "other", username=token)
    # Take-over of the first by a new connection with its client id: never offline.
    last = await RawClient.connected(port(app), "same", username=token, clean=False)
    assert await first.closed_by_peer(wait_s=3)
    await second_connection.close()  # another connection of the device remains
    # Counted right through the take-over: the one connection left, not two.
    await wait_until(lambda: presence.connections(device) == 1)
    assert await history(http, org, device_id) == [("online", "connect")]
    assert await connectivity(http, org, device_id) == "online"
    # And when that one ends, the device is offline (a count stuck above zero never was).
    await last.disconnect()
    flapless = [("online", "connect"), ("offline", "disconnect")]
    await wait_until(lambda: _history_is(http, org, device_id, flapless))


async def test_a_message_committed_after_the_disconnect_does_not_bring_it_back(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port(app), "late", username=token)
    for n in range(50):
        await client.publish(f"devices/{device_id}/telemetry", b'{"n": %d}' % n, qos=0)
    await client.disconnect()
    await wait_until(lambda: _is(http, org, device_id, "offline"))
    # The messages came before the disconnect: every batch is committed (and its after-commit
    # handlers have run) once nothing is pending.
    await wait_until(lambda: app.state.pipeline.pending == 0)
    assert await connectivity(http, org, device_id) == "offline"
    assert (await history(http, org, device_id))[-1] == ("offline", "disconnect")


async def test_http_traffic_then_silence(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    device_id, token = await new_device(http, org)
    posted = await http.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json={"t": 1}
    )
    assert posted.status_code == 200
    await wait_until(lambda: _is(http, org, device_id, "online"))
    presence = app.state.presence
    assert await presence.sweep() == 0  # heard from just now
    async with live_database.session() as session:  # ten minutes of silence
        await session.execute(
            update(Device)
            .where(Device.id == uuid.UUID(device_id))
            .values(last_seen_at=utcnow() - timedelta(seconds=601))
        )
        await session.commit()
    assert await presence.sweep() == 1
    await wait_until(lambda: _is(http, org, device_id, "offline"))
    assert await history(http, org, device_id) == [("online", "traffic"), ("offline", "timeout")]
    assert not presence.is_online(uuid.UUID(device_id))


async def test_status_changes_are_pushed_live(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    async with (
        serving(app) as url,
        connect(f"ws://{url}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws,
    ):
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "status"}).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        client = await RawClient.connected(port(app), "live", username=token)
        online: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (online["type"], online["device_id"], online["status"]) == (
            "status",
            device_id,
            "online",
        )
        await client.close()
        offline: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (offline["status"], offline["reason"]) == ("offline", "will")


async def test_presence_changes_do_not_clear_the_device_auth_cache(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    """Connectivity is not a credential: going online or offline must not make every broker
    re-check every session. Disabling a device still does."""
    cleared: list[int] = []
    stop = auth_cache.on_invalidate(lambda: cleared.append(1))
    try:
        device_id, token = await new_device(http, org)
        cleared.clear()
        client = await RawClient.connected(port(app), "quiet", username=token)
        await wait_until(lambda: _is(http, org, device_id, "online"))
        await client.disconnect()
        await wait_until(lambda: _is(http, org, device_id, "offline"))
        assert cleared == []
        disabled = await http.patch(
            f"/api/v1/devices/{device_id}",
            headers=org.headers(Role.MANAGER),
            json={"status": "disabled"},
        )
        assert disabled.status_code == 200, disabled.text
        assert cleared
    finally:
        stop()


async def test_a_device_that_only_polls_for_commands_is_online(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    native_id, native_token = await new_device(http, org)
    tb_id, tb_token = await new_device(http, org)
    polled = await http.get(
        "/api/v1/devices/me/commands",
        params={"timeout": 0},
        headers={"X-Device-Token": native_token},
    )
    assert polled.status_code == 200, polled.text
    rpc = await http.get(f"/api/v1/{tb_token}/rpc", params={"timeout": 0})
    assert rpc.status_code == 408, rpc.text  # nothing waits: still the device's traffic
    await wait_until(lambda: _is(http, org, native_id, "online"))
    await wait_until(lambda: _is(http, org, tb_id, "online"))
