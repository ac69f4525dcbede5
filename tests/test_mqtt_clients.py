"""Real-world MQTT clients against the embedded broker: paho-mqtt 2 and Mosquitto's own.

The raw test client shows the broker's guarantees packet by packet; these show that
clients devices actually run (ThingsBoard-style firmware on paho, shell scripts on
mosquitto_pub/mosquitto_sub) work without a change.
"""

from __future__ import annotations

import asyncio
import queue
import subprocess

import httpx
import orjson
from fastapi import FastAPI
from paho.mqtt import client as paho

from fleetcore.auth.principal import Role
from tests.support.devices import new_device
from tests.support.tenants import Tenant
from tests.support.wait import wait_until


async def stored_keys(http: httpx.AsyncClient, org: Tenant, device_id: str) -> str:
    response = await http.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers()
    )
    assert response.status_code == 200, response.text
    return response.text


async def test_paho_thingsboard_style_device(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    device = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="esp32-1")
    device.username_pw_set(token)
    device.on_message = lambda _c, _u, message: inbox.put((message.topic, message.payload))
    port = int(mqtt_app.state.settings.mqtt_port)
    await asyncio.to_thread(device.connect, "127.0.0.1", port, 30)
    device.loop_start()
    try:
        result, _ = device.subscribe("v1/devices/me/attributes", qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        sent = device.publish("v1/devices/me/telemetry", orjson.dumps({"humidity": 41.0}), qos=1)
        await asyncio.to_thread(sent.wait_for_publish, 10)
        assert sent.is_published()  # PUBACK: the reading is committed
        assert "humidity" in await stored_keys(http, org, device_id)
        await wait_until(lambda: mqtt_app.state.transport.online() == {device_id})
        await http.put(
            f"/api/v1/devices/{device_id}/attributes/shared",
            headers=org.headers(Role.MANAGER),
            json={"interval": 15},
        )
        topic, payload = await asyncio.to_thread(inbox.get, True, 10)
        assert (topic, orjson.loads(payload)) == ("v1/devices/me/attributes", {"interval": 15})
    finally:
        device.disconnect()
        device.loop_stop()


async def test_mosquitto_clients_publish_and_receive_config(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json={"mode": "eco"},
    )
    port = str(mqtt_app.state.settings.mqtt_port)
    common = ["-h", "127.0.0.1", "-p", port, "-u", device_id, "-P", token, "-q", "1"]
    published = await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_pub", *common, "-t", f"devices/{device_id}/telemetry", "-m", '{"flow": 3.5}'],
        capture_output=True,
        timeout=20,
    )
    assert published.returncode == 0, published.stderr
    assert "flow" in await stored_keys(http, org, device_id)
    config = await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_sub", *common, "-C", "1", "-W", "10", "-t", f"devices/{device_id}/config"],
        capture_output=True,
        timeout=20,
    )
    assert config.returncode == 0, config.stderr
    assert orjson.loads(config.stdout)["shared"] == {"mode": "eco"}
    refused = await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-u", "wrong", "-t", "x", "-m", "1"],
        capture_output=True,
        timeout=20,
    )
    assert refused.returncode != 0
