"""OTA chunks over MQTT through Mosquitto 2.0 (dynamic security and Fleetcore's mount
plugin): a ThingsBoard-style device (paho, ThingsBoard's documented topics, the same for
every device) downloads its package on v2/fw/request/{id}/chunk/{n}; the plugin mounts the
requests under tb/{username}/ for the platform and brings each response down to that client
alone; a refused request is answered on v2/fw/error."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.mosquitto_dynsec import DynsecMosquitto
from tests.support.paho_device import PahoDevice
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until

CHUNK = 16 * 1024


@pytest.fixture
def broker() -> Iterator[DynsecMosquitto]:
    server = DynsecMosquitto()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def app(
    broker: DynsecMosquitto, live_database: Database, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    async with running_app(
        live_database,
        tmp_path,
        mqtt_url=broker.url,
        mqtt_dynsec=True,
        mqtt_share_group="fleetcore",
        mqtt_ingest_id=f"api-{secrets.token_hex(4)}",
        mqtt_ingest_session_expiry_s=0,
        ota_job_interval_s=0.2,
    ) as application:
        application.state.broker_sync.retry_max_s = 1.0
        await application.state.transport.wait_ready()
        yield application


async def _connected(broker: DynsecMosquitto, device_id: str, token: str) -> PahoDevice | None:
    """The device connected once the platform has put its credentials in the broker."""
    device = PahoDevice(f"tb-{device_id[:8]}-{secrets.token_hex(3)}")
    event = await device.connect(broker.port, username=device_id, password=token)
    if event.data["reason"] == 0:
        return device
    device.stop()
    return None


async def test_a_thingsboard_device_downloads_over_mqtt_chunks_through_mosquitto(
    app: FastAPI, broker: DynsecMosquitto, live_database: Database
) -> None:
    data = os.urandom(5 * CHUNK + 1234)
    async with client_for(app) as http:
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        device: PahoDevice | None = None

        async def connects() -> bool:
            nonlocal device
            device = await _connected(broker, device_id, token)
            return device is not None

        await wait_until(connects, within=20, every=0.2)
        assert device is not None
        try:
            await _download(http, org, device, device_id, data)
        finally:
            device.stop()


async def _download(
    http: httpx.AsyncClient, org: Tenant, device: PahoDevice, device_id: str, data: bytes
) -> None:
    granted = await device.subscribe(
        "v1/devices/me/attributes", "v2/fw/response/+/chunk/+", "v2/fw/error"
    )
    assert all(code < 0x80 for code in granted), granted
    uploaded = await http.post(
        "/api/v1/ota/packages",
        headers=org.headers(Role.MANAGER),
        data={"title": "tb-fw", "version": "2.0", "kind": "firmware"},
        files={"file": ("fw.bin", data, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    started = await http.post(
        "/api/v1/ota/rollouts",
        headers=org.headers(Role.MANAGER),
        json={"package_id": uploaded.json()["id"], "target": {"device_ids": [device_id]}},
    )
    assert started.status_code == 201, started.text
    update = orjson.loads((await device.next("message")).data["payload"])
    assert (update["fw_title"], update["fw_version"]) == ("tb-fw", "2.0")
    info = {"current_fw_title": "tb-fw", "current_fw_version": "1.0"}
    await device.publish(
        "v1/devices/me/attributes", orjson.dumps({**info, "fw_state": "DOWNLOADING"})
    )

    received, chunk = bytearray(), 0
    while True:
        await device.publish(f"v2/fw/request/5/chunk/{chunk}", str(CHUNK).encode())
        message = await device.next("message")
        assert message.data["topic"] == f"v2/fw/response/5/chunk/{chunk}"
        received += message.data["payload"]
        if len(message.data["payload"]) < CHUNK:
            break
        chunk += 1
    assert bytes(received) == data
    assert hashlib.sha256(received).hexdigest() == update["fw_checksum"]

    # Refused (no software assigned): the answer comes down the same mount.
    await device.publish("v2/sw/request/6/chunk/0", str(CHUNK).encode())
    refused = await device.next("message")
    assert (refused.data["topic"], refused.data["payload"]) == ("v2/fw/error", b"NOT_FOUND")

    done = {"current_fw_title": "tb-fw", "current_fw_version": "2.0", "fw_state": "UPDATED"}
    await device.publish("v1/devices/me/attributes", orjson.dumps(done))
    rollout_url = f"/api/v1/ota/rollouts/{started.json()['id']}"

    async def completed() -> bool:
        body = (await http.get(rollout_url, headers=org.headers())).json()
        return bool(body["status"] == "completed" and body["counts"]["updated"] == 1)

    await wait_until(completed, within=20)
