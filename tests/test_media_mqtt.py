"""An event over MQTT refers to an image uploaded over HTTP (the payload stays small); a bad
reference becomes a dead letter and stores nothing. The app's embedded broker, both databases."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from tests.support import images
from tests.support.devices import new_device, port_of
from tests.support.mqtt_raw import RawClient
from tests.support.tenants import Tenant
from tests.support.wait import wait_until


async def uploaded(http: httpx.AsyncClient, token: str, data: bytes) -> str:
    created = await http.post(
        "/api/v1/devices/me/media/uploads",
        headers={"X-Device-Token": token},
        json={"content_type": "image/jpeg", "bytes": len(data)},
    )
    assert created.status_code == 201, created.text
    put = await http.put(created.json()["upload_url"], content=data)
    assert put.status_code == 201, put.text
    return str(created.json()["media_id"])


async def device_media(http: httpx.AsyncClient, org: Tenant, device_id: str) -> list[Any]:
    response = await http.get(f"/api/v1/devices/{device_id}/media", headers=org.headers())
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def test_an_mqtt_event_attaches_an_uploaded_image(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    media_id = await uploaded(http, token, images.jpeg((640, 480)))
    client = await RawClient.connected(port_of(mqtt_app), "cam", username=token)
    event = {"type": "snapshot", "data": {"plate": "1กข 234"}, "media": [media_id]}
    await client.publish(f"devices/{device_id}/events", orjson.dumps(event), qos=1)

    async def attached() -> bool:
        return any(m["event_id"] is not None for m in await device_media(http, org, device_id))

    await wait_until(attached, within=5)
    events = await http.get(f"/api/v1/devices/{device_id}/events", headers=org.headers())
    [stored] = [e for e in events.json()["items"] if e["type"] == "snapshot"]
    [media] = await device_media(http, org, device_id)
    assert media["event_id"] == stored["id"]
    served = await http.get(f"/api/v1/media/{media_id}", headers=org.headers(Role.VIEWER))
    assert served.status_code == 200


async def test_a_bad_reference_over_mqtt_is_a_dead_letter(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    other_id, other_token = await new_device(http, org)
    theirs = await uploaded(http, other_token, images.jpeg((64, 64)))
    client = await RawClient.connected(port_of(mqtt_app), "cam2", username=token)
    topic = f"devices/{device_id}/events"
    for ref in (theirs, str(uuid.uuid4()), "front"):
        await client.publish(topic, orjson.dumps({"type": "snapshot", "media": [ref]}), qos=1)

    async def dead() -> list[Any]:
        response = await http.get(
            "/api/v1/dead-letters",
            headers=org.headers(),
            params={"device_id": device_id, "reason": "media_reference_invalid"},
        )
        assert response.status_code == 200, response.text
        items: list[Any] = response.json()["items"]
        return items

    async def three() -> bool:
        return len(await dead()) == 3

    await wait_until(three, within=5)
    events = await http.get(f"/api/v1/devices/{device_id}/events", headers=org.headers())
    assert events.json()["items"] == []
    [media] = await device_media(http, org, other_id)
    assert media["event_id"] is None  # still the other device's, unattached
