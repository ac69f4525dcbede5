"""The production shape end to end: Mosquitto 2.0 with dynamic security and Fleetcore's mount
plugin, two ingest workers (this process, and `fleetcore serve --role ingest` in another),
PostgreSQL, devices whose credentials Fleetcore keeps in the broker.

- A native device publishes with its id and token; both workers take a share; every
  reading is stored once. It cannot publish on another device's topic.
- ThingsBoard's own SDK, unchanged (MQTT Basic credentials: id and token), does telemetry,
  attributes, attribute requests, shared-attribute updates and a server-side RPC through
  its per-client mount.
- A rotated token and a disabled device are refused by the broker itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import text

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.http_clients import local_client
from tests.support.ingest_workers import IngestWorker
from tests.support.mosquitto_dynsec import DynsecMosquitto
from tests.support.postgres import PG_ONLY
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until
from tests.test_mqtt_thingsboard_sdk import sdk_python

SDK_DEVICE = Path(__file__).parent / "support" / "tb_sdk_device.py"
GROUP = "fleetcore"  # the share group the harness's platform role may subscribe to


@pytest.fixture
def broker() -> Iterator[DynsecMosquitto]:
    server = DynsecMosquitto()
    server.start()
    try:
        yield server
    finally:
        server.close()


async def received(worker: IngestWorker) -> float:
    """Messages the worker took from the broker (its /metrics)."""
    async with local_client(base_url=f"http://127.0.0.1:{worker.port}") as http:
        text = (await http.get("/metrics")).text
    found = re.search(r"^fleetcore_mqtt_external_received_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
async def app(
    broker: DynsecMosquitto, live_database: Database, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    async with running_app(
        live_database,
        tmp_path,
        mqtt_url=broker.url,
        mqtt_dynsec=True,
        mqtt_share_group=GROUP,
        mqtt_ingest_id=f"api-{secrets.token_hex(4)}",
        mqtt_ingest_session_expiry_s=0,
    ) as application:
        application.state.broker_sync.retry_max_s = 1.0
        await application.state.transport.wait_ready()
        yield application


@pytest.fixture
async def worker(
    app: FastAPI, broker: DynsecMosquitto, live_pg_url: str, tmp_path: Path
) -> AsyncIterator[IngestWorker]:
    second = IngestWorker(
        f"w-{secrets.token_hex(4)}", broker_url=broker.url, database_url=live_pg_url, root=tmp_path
    )
    second.start()
    try:
        await wait_until(second.ready, within=30, every=0.2)
        yield second
    finally:
        second.kill(signal.SIGTERM)


class Device:
    """A native device on paho-mqtt (MQTT 5), logged in with its id and token."""

    def __init__(self, port: int, device_id: str, token: str) -> None:
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code
        self.connack: int | None = None
        self.done = threading.Condition()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{device_id[:8]}-{secrets.token_hex(3)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(device_id, token)
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.port = port

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self.done:
            self.connack = reason.value
            self.done.notify_all()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.done:
            self.acks[mid] = reason.value
            self.done.notify_all()

    def connect(self) -> int | None:
        """The CONNACK reason code (0: accepted), None when the broker said nothing."""
        self.client.connect("127.0.0.1", self.port, 30)
        self.client.loop_start()
        with self.done:
            self.done.wait_for(lambda: self.connack is not None, timeout=10)
        return self.connack

    def publish(self, topic: str, body: dict[str, Any]) -> int:
        """The PUBACK reason code (0 success, 0x10 no subscribers, >= 0x80 refused)."""
        info = self.client.publish(topic, orjson.dumps(body), qos=1)
        with self.done:
            assert self.done.wait_for(lambda: info.mid in self.acks, timeout=10)
            return self.acks[info.mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def logs_in(broker: DynsecMosquitto, device_id: str, token: str) -> bool:
    device = Device(broker.port, device_id, token)
    try:
        return await asyncio.to_thread(device.connect) == 0
    finally:
        device.close()


async def stored_readings(database: Database, device_id: str) -> int:
    """Numeric readings of the device, across its series."""
    async with database.session() as session:
        count = await session.scalar(
            text(
                "SELECT count(*) FROM ts_num n JOIN ts_series s ON s.id = n.series_id "
                "WHERE s.device_id = :device"
            ),
            {"device": device_id},
        )
    return int(count or 0)


@PG_ONLY
async def test_two_workers_share_a_native_stream_and_the_broker_enforces_credentials(
    app: FastAPI, worker: IngestWorker, broker: DynsecMosquitto, live_database: Database
) -> None:
    async with client_for(app) as http:
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        other_id, _ = await new_device(http, org)
        await wait_until(lambda: logs_in(broker, device_id, token), within=20, every=0.2)

        device = Device(broker.port, device_id, token)
        assert await asyncio.to_thread(device.connect) == 0
        base = int(time.time() * 1000) - 3_600_000
        try:
            for n in range(60):
                body = {"ts": base + n * 1000, "values": {"a": n, "b": n * 2.0}}
                code = await asyncio.to_thread(
                    device.publish, f"devices/{device_id}/telemetry", body
                )
                assert code < 0x80
            await wait_until(lambda: _count_is(live_database, device_id, 120), within=20, every=0.1)
            # Another device's topic: refused by the broker (and it drops the connection).
            refused = await asyncio.to_thread(
                device.publish, f"devices/{other_id}/telemetry", {"x": 1}
            )
            assert refused >= 0x80
        finally:
            device.close()
        assert await stored_readings(live_database, other_id) == 0
        # Both workers took a share of the stream.
        assert await received(worker) > 0
        assert app.state.transport.directory.cached(device_id)[0]

        rotated = await http.post(
            f"/api/v1/devices/{device_id}/credentials/rotate", headers=org.headers(Role.MANAGER)
        )
        assert rotated.status_code == 200, rotated.text
        new_token = rotated.json()["access_token"]
        await wait_until(lambda: logs_in(broker, device_id, new_token), within=20, every=0.2)
        assert not await logs_in(broker, device_id, token)

        disabled = await http.patch(
            f"/api/v1/devices/{device_id}",
            headers=org.headers(Role.MANAGER),
            json={"status": "disabled"},
        )
        assert disabled.status_code == 200, disabled.text
        await wait_until(lambda: _refused(broker, device_id, new_token), within=20, every=0.2)


async def _count_is(database: Database, device_id: str, want: int) -> bool:
    return await stored_readings(database, device_id) == want


async def _refused(broker: DynsecMosquitto, device_id: str, token: str) -> bool:
    return not await logs_in(broker, device_id, token)


@PG_ONLY
async def test_thingsboard_sdk_through_the_mount(
    app: FastAPI, worker: IngestWorker, broker: DynsecMosquitto, live_database: Database
) -> None:
    python = await asyncio.to_thread(sdk_python)
    async with client_for(app) as http:
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        await wait_until(lambda: logs_in(broker, device_id, token), within=20, every=0.2)
        shared = await http.put(
            f"/api/v1/devices/{device_id}/attributes/shared",
            headers=org.headers(Role.MANAGER),
            json={"interval": 30},
        )
        assert shared.status_code == 200, shared.text
        process = await asyncio.create_subprocess_exec(
            str(python),
            str(SDK_DEVICE),
            "basic",
            str(broker.port),
            device_id,
            token,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            steps = await _drive(process, http, org, device_id)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
        assert steps["connected"]["ok"]
        assert steps["telemetry"]["rc"] == 0
        assert steps["attributes"]["rc"] == 0
        assert steps["requested"]["response"] == {
            "client": {"sdk_fw": "1.0.3"},
            "shared": {"interval": 30},
        }
        assert steps["updated"]["update"] == {"interval": 90}
        assert steps["rpc"]["request"] == {"method": "setLed", "params": {"on": True}}
        latest = await http.get(
            f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers()
        )
        assert "sdk_temp" in latest.text


async def _drive(
    process: asyncio.subprocess.Process, http: httpx.AsyncClient, org: Tenant, device_id: str
) -> dict[str, dict[str, Any]]:
    steps: dict[str, dict[str, Any]] = {}
    assert process.stdout is not None
    command: dict[str, Any] = {}
    while "rpc" not in steps:
        line = await asyncio.wait_for(process.stdout.readline(), 40)
        if not line:
            assert process.stderr is not None
            raise AssertionError((await process.stderr.read()).decode()[-3000:])
        step = json.loads(line)
        steps[step["step"]] = step
        if step["step"] == "subscribed":
            await http.put(
                f"/api/v1/devices/{device_id}/attributes/shared",
                headers=org.headers(Role.MANAGER),
                json={"interval": 90},
            )
        if step["step"] == "rpc_ready":
            made = await http.post(
                f"/api/v1/devices/{device_id}/commands",
                headers=org.headers(Role.OPERATOR),
                json={"method": "setLed", "params": {"on": True}, "persistent": True},
            )
            assert made.status_code == 201, made.text
            command = made.json()
    assert command

    async def succeeded() -> bool:
        response = await http.get(
            f"/api/v1/devices/{device_id}/commands/{command['id']}", headers=org.headers()
        )
        return bool(response.json()["status"] == "succeeded")

    await wait_until(succeeded, within=15, every=0.1)
    return steps
