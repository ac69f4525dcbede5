"""Desired configuration: HTTP long-poll (native and ThingsBoard) and live desired-vs-reported."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fleetcore.auth.principal import Role
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import Tenant
from tests.support.wait import wait_until


async def set_shared(
    http: httpx.AsyncClient, org: Tenant, device_id: str, **values: object
) -> None:
    response = await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json=values,
    )
    assert response.status_code == 200, response.text


def polling(app: FastAPI, device_id: str) -> bool:
    """Whether a long-poll of the device waits on its desired state."""
    return uuid.UUID(device_id) in app.state.desired._waiters


async def test_long_poll_answers_when_the_desired_state_changes(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    headers = {"X-Device-Token": token}
    await set_shared(http, org, device_id, interval=10)
    now = (await http.get("/api/v1/devices/me/attributes", headers=headers)).json()
    assert now["shared"] == {"interval": 10}
    waiting = asyncio.create_task(
        http.get(
            "/api/v1/devices/me/attributes",
            headers=headers,
            params={"after_version": now["shared_version"], "timeout": 10},
        )
    )
    await wait_until(lambda: polling(mqtt_app, device_id))
    assert not waiting.done()
    await set_shared(http, org, device_id, interval=20)
    answer = await asyncio.wait_for(waiting, 5)
    assert answer.status_code == 200
    assert answer.json()["shared"] == {"interval": 20}
    assert answer.json()["shared_version"] > now["shared_version"]
    quiet = await http.get(
        "/api/v1/devices/me/attributes",
        headers=headers,
        params={"after_version": answer.json()["shared_version"], "timeout": 0.3},
    )
    assert quiet.json()["shared_version"] == answer.json()["shared_version"]


async def test_thingsboard_attribute_updates_long_poll(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    timed_out = await http.get(f"/api/v1/{token}/attributes/updates", params={"timeout": 300})
    assert timed_out.status_code == 408
    assert timed_out.json()["error"]["code"] == "NO_UPDATE"
    waiting = asyncio.create_task(
        http.get(f"/api/v1/{token}/attributes/updates", params={"timeout": 10_000})
    )
    await wait_until(lambda: polling(mqtt_app, device_id))
    await set_shared(http, org, device_id, mode="eco")
    answer = await asyncio.wait_for(waiting, 5)
    assert (answer.status_code, answer.json()) == (200, {"mode": "eco"})
    bad = await http.get("/api/v1/fcd_not-a-token/attributes/updates", params={"timeout": 100})
    assert bad.status_code == 401


async def test_live_stream_shows_desired_versus_reported(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    async with (
        serving(mqtt_app) as url,
        connect(f"ws://{url}/api/v1/ws?token={org.tokens[Role.VIEWER]}") as ws,
    ):
        request = {"type": "subscribe", "channel": "status", "device_id": device_id}
        await ws.send(orjson.dumps(request).decode())
        assert orjson.loads(await ws.recv())["type"] == "subscribed"
        await set_shared(http, org, device_id, interval=30)
        pending = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (pending["type"], pending["differs"], pending["in_sync"]) == (
            "config",
            ["interval"],
            False,
        )
        reported = await http.post(
            "/api/v1/devices/me/attributes",
            headers={"X-Device-Token": token},
            json={"interval": 30},
        )
        assert reported.status_code == 200
        applied = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert (applied["differs"], applied["in_sync"]) == ([], True)
