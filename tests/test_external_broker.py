"""Devices on an external broker (Mosquitto): the platform as an ingest worker of it.

The app runs with FLEETCORE_MQTT_URL and no embedded broker. Devices publish to Mosquitto;
the app consumes through shared subscriptions and answers through the broker, with the same
device-message layer as the embedded broker: what is stored, dead-lettered, replied and sent
must match. Device credentials and ACLs in the broker are the dynamic-security tests' part;
here the "devices" publish through a client that may use every topic, so mounted ThingsBoard
topics (tb/<id>/...) can be produced as the broker's mount would.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.deadletters.models import DeadLetter
from fleetcore.devices import auth_cache
from fleetcore.external_broker.directory import DeviceDirectory
from fleetcore.external_broker.transport import ORIGIN, ExternalTransport, upstream_filters
from tests.conftest import client_for, running_app
from tests.support.certs import self_signed
from tests.support.devices import new_device
from tests.support.dynsec_free_broker import OpenMosquitto
from tests.support.postgres import free_port
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


@pytest.fixture(scope="module")
def broker() -> Iterator[OpenMosquitto]:
    server = OpenMosquitto()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def ext_app(
    broker: OpenMosquitto, live_database: Database, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    """The app as the only ingest worker of a fresh share group (no session left behind)."""
    async with running_app(
        live_database,
        tmp_path,
        mqtt_port=0,
        mqtt_url=f"mqtt://fleetcore:secret@127.0.0.1:{broker.port}",
        mqtt_share_group=f"t{uuid.uuid4().hex[:10]}",
        mqtt_ingest_id=uuid.uuid4().hex[:10],
        mqtt_ingest_session_expiry_s=0,
    ) as application:
        await application.state.transport.wait_ready()
        yield application


@pytest.fixture
async def ext_http(ext_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ext_app) as http:
        yield http


@pytest.fixture
async def ext_org(ext_http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(ext_http, live_database)


class Peer:
    """A paho client on the broker (a device, or the broker's mount as seen from outside)."""

    def __init__(self, port: int, *, version: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5):
        self.inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:8]}", protocol=version
        )
        self.client.on_message = lambda _c, _u, message: self.inbox.put(message)
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | dict[str, Any], *, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        self.client.publish(topic, body, qos=1, retain=retain).wait_for_publish(10)

    def subscribe(self, topic_filter: str) -> None:
        """Subscribe and wait for the SUBACK."""
        granted = threading.Event()
        self.client.on_subscribe = lambda *_: granted.set()
        result, _ = self.client.subscribe(topic_filter, qos=1)
        assert result == paho.MQTT_ERR_SUCCESS
        assert granted.wait(10)

    async def next(self, within: float = 10.0) -> paho.MQTTMessage:
        return await asyncio.to_thread(self.inbox.get, True, within)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def peer(broker: OpenMosquitto) -> Iterator[Peer]:
    client = Peer(broker.port)
    try:
        yield client
    finally:
        client.close()


async def latest(http: httpx.AsyncClient, org: Tenant, device_id: str) -> dict[str, Any]:
    response = await http.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers()
    )
    assert response.status_code == 200, response.text
    values: dict[str, Any] = response.json()["values"]
    return {key: entry["value"] for key, entry in values.items()}


async def dead_letters(app: FastAPI) -> list[DeadLetter]:
    """What the app's sink refused, written out first."""
    await app.state.dead_letters.flush()
    database: Database = app.state.database
    async with database.session() as session:
        return list(await session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def test_subscriptions_are_shared_and_upstream_only() -> None:
    filters = upstream_filters("g1")
    assert all(f.startswith("$share/g1/") for f in filters)
    assert "$share/g1/devices/+/telemetry" in filters
    assert "$share/g1/devices/+/commands/+/result" in filters
    assert "$share/g1/tb/+/v1/devices/me/#" in filters
    assert {"$share/g1/tb/+/v2/fw/request/#", "$share/g1/tb/+/v2/sw/request/#"} <= set(filters)
    # What flows to devices is never consumed (a worker would eat its own commands).
    assert not any(f.endswith(("/commands", "/config")) for f in filters)
    assert not any("response" in f or "error" in f for f in filters)


async def test_native_and_mounted_telemetry_are_stored(
    ext_app: FastAPI, ext_http: httpx.AsyncClient, ext_org: Tenant, peer: Peer
) -> None:
    device_id, _ = await new_device(ext_http, ext_org)
    peer.publish(f"devices/{device_id}/telemetry", {"flow": 3.5})
    await wait_until(lambda: _has(ext_http, ext_org, device_id, "flow"))
    # A ThingsBoard device's topic as its mount hands it to the platform.
    peer.publish(
        f"tb/{device_id}/v1/devices/me/telemetry", {"ts": 1_700_000_000_000, "values": {"rh": 41}}
    )
    await wait_until(lambda: _has(ext_http, ext_org, device_id, "rh"))
    assert (await latest(ext_http, ext_org, device_id))["flow"] == 3.5
    assert device_id in ext_app.state.transport.online()


async def _has(http: httpx.AsyncClient, org: Tenant, device_id: str, key: str) -> bool:
    return key in await latest(http, org, device_id)


async def test_bad_input_is_dead_lettered_not_lost(
    ext_app: FastAPI,
    ext_http: httpx.AsyncClient,
    ext_org: Tenant,
    peer: Peer,
    live_database: Database,
) -> None:
    device_id, _ = await new_device(ext_http, ext_org)
    peer.publish(f"devices/{device_id}/telemetry", b"{not json")
    peer.publish(f"devices/{uuid.uuid4()}/telemetry", {"t": 1})  # no such device
    peer.publish(f"tb/{device_id}/v1/devices/me/nonsense", {"t": 1})
    peer.publish(f"devices/{device_id}/telemetry", {"after": 1})  # the stream goes on
    await wait_until(lambda: _has(ext_http, ext_org, device_id, "after"))

    async def three() -> bool:
        return len(await dead_letters(ext_app)) >= 3

    await wait_until(three)
    letters = {d.reason: d for d in await dead_letters(ext_app)}
    assert set(letters) == {"malformed_json", "unknown_device", "unknown_topic"}
    assert str(letters["malformed_json"].device_id) == device_id
    assert letters["unknown_topic"].topic == "v1/devices/me/nonsense"  # as the device used it
    assert letters["unknown_device"].device_id is None


async def test_commands_reach_the_device_on_its_own_family(
    ext_app: FastAPI,
    ext_http: httpx.AsyncClient,
    ext_org: Tenant,
    peer: Peer,
    live_database: Database,
) -> None:
    native_id, _ = await new_device(ext_http, ext_org)
    tb_id, _ = await new_device(ext_http, ext_org)
    peer.subscribe(f"devices/{native_id}/commands")
    peer.subscribe(f"tb/{tb_id}/v1/devices/me/rpc/request/+")
    peer.subscribe(f"devices/{tb_id}/commands")
    # Heard from: online, and the family each one uses is known.
    peer.publish(f"devices/{native_id}/telemetry", {"t": 1})
    peer.publish(f"tb/{tb_id}/v1/devices/me/telemetry", {"t": 1})
    await wait_until(lambda: {native_id, tb_id} <= ext_app.state.transport.online())

    made = await _command(ext_http, ext_org, native_id, "reboot")
    assert (made["status"], made["channel"]) == ("sent", "mqtt")
    message = await peer.next()
    assert message.topic == f"devices/{native_id}/commands"
    assert orjson.loads(message.payload)["method"] == "reboot"
    result = {"status": "succeeded", "result": {"ok": True}}
    peer.publish(f"devices/{native_id}/commands/{made['id']}/result", result)
    await wait_until(lambda: _status(ext_http, ext_org, native_id, made["id"], "succeeded"))

    rpc = await _command(ext_http, ext_org, tb_id, "setGpio")
    assert rpc["channel"] == "thingsboard"
    message = await peer.next()
    assert message.topic == f"tb/{tb_id}/v1/devices/me/rpc/request/{rpc['rpc_id']}"
    assert ORIGIN in [tuple(p) for p in message.properties.UserProperty]
    peer.publish(f"tb/{tb_id}/v1/devices/me/rpc/response/{rpc['rpc_id']}", {"value": 1})
    await wait_until(lambda: _status(ext_http, ext_org, tb_id, rpc["id"], "succeeded"))
    assert peer.inbox.empty()  # nothing on the native topic of the ThingsBoard device
    # The platform's own publish on the mount came back to the worker and was skipped.
    assert await dead_letters(ext_app) == []


async def _command(
    http: httpx.AsyncClient, org: Tenant, device_id: str, method: str, **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=org.headers(Role.OPERATOR),
        json={"method": method, "params": {}, **extra},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _status(
    http: httpx.AsyncClient, org: Tenant, device_id: str, command_id: str, want: str
) -> bool:
    response = await http.get(
        f"/api/v1/devices/{device_id}/commands/{command_id}", headers=org.headers()
    )
    return bool(response.json()["status"] == want)


async def test_attribute_requests_and_desired_config_are_answered(
    ext_app: FastAPI,
    ext_http: httpx.AsyncClient,
    ext_org: Tenant,
    peer: Peer,
    broker: OpenMosquitto,
) -> None:
    device_id, _ = await new_device(ext_http, ext_org)
    response = await ext_http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=ext_org.headers(Role.MANAGER),
        json={"interval": 15},
    )
    assert response.status_code == 200, response.text
    peer.subscribe(f"tb/{device_id}/v1/devices/me/attributes/response/+")
    peer.publish(f"tb/{device_id}/v1/devices/me/attributes/request/3", {"sharedKeys": "interval"})
    message = await peer.next()
    assert message.topic == f"tb/{device_id}/v1/devices/me/attributes/response/3"
    assert orjson.loads(message.payload)["shared"] == {"interval": 15}
    # Desired configuration is retained on the native config topic for the next subscriber.
    peer.subscribe(f"devices/{device_id}/config")
    await ext_http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=ext_org.headers(Role.MANAGER),
        json={"interval": 30},
    )
    while True:  # the live push
        message = await peer.next()
        if orjson.loads(message.payload).get("shared", {}).get("interval") == 30:
            break
    later = Peer(broker.port)  # a device that connects afterwards
    try:
        later.subscribe(f"devices/{device_id}/config")
        message = await later.next()
        assert message.retain
        assert orjson.loads(message.payload)["shared"]["interval"] == 30
    finally:
        later.close()


async def test_status_messages_drive_presence(
    ext_app: FastAPI, ext_http: httpx.AsyncClient, ext_org: Tenant, peer: Peer
) -> None:
    device_id, _ = await new_device(ext_http, ext_org)
    peer.publish(f"devices/{device_id}/status", {"status": "online"})
    await wait_until(lambda: _device_status(ext_http, ext_org, device_id, "online"))
    peer.publish(f"devices/{device_id}/status", {"status": "offline"})  # e.g. its last will
    await wait_until(lambda: _device_status(ext_http, ext_org, device_id, "offline"))


async def _device_status(http: httpx.AsyncClient, org: Tenant, device_id: str, want: str) -> bool:
    response = await http.get(f"/api/v1/devices/{device_id}", headers=org.headers())
    return bool(response.json()["connectivity"] == want)


async def test_not_ready_without_the_broker(live_database: Database, tmp_path: Path) -> None:
    closed = free_port()
    async with running_app(
        live_database, tmp_path, mqtt_port=0, mqtt_url=f"mqtt://fleetcore:x@127.0.0.1:{closed}"
    ) as application:
        transport: ExternalTransport = application.state.transport
        async with client_for(application) as http:
            response = await http.get("/ready")
        assert response.status_code == 503
        assert "mqtt" in response.text
        assert transport.online() == set()


# paho-mqtt's reconnect loop drops the socket of a failed TLS handshake without closing it.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_mqtts_with_a_private_ca(live_database: Database, tmp_path: Path) -> None:
    certificate, key = self_signed(tmp_path)
    server = OpenMosquitto(tls=(certificate, key))
    server.start()
    try:
        url = f"mqtts://fleetcore:secret@localhost:{server.tls_port}"
        async with running_app(
            live_database,
            tmp_path,
            mqtt_port=0,
            mqtt_url=url,
            mqtt_ca_file=certificate,
            mqtt_ingest_session_expiry_s=0,
        ) as application:
            await application.state.transport.wait_ready()
        # Without the CA the certificate is not trusted: never connected, so not ready.
        async with (
            running_app(live_database, tmp_path, mqtt_port=0, mqtt_url=url) as application,
            client_for(application) as http,
        ):
            assert (await http.get("/ready")).status_code == 503
    finally:
        server.stop()


async def test_a_command_queued_for_a_silent_device_goes_out_when_it_is_heard(
    ext_app: FastAPI, ext_http: httpx.AsyncClient, ext_org: Tenant, peer: Peer
) -> None:
    device_id, _ = await new_device(ext_http, ext_org)
    waiting = await _command(ext_http, ext_org, device_id, "calibrate", persistent=True)
    assert waiting["status"] == "queued"  # never heard from: nobody to send it to
    peer.subscribe(f"devices/{device_id}/commands")
    peer.publish(f"devices/{device_id}/telemetry", {"t": 1})  # back: it listens again
    message = await peer.next()
    assert message.topic == f"devices/{device_id}/commands"
    assert orjson.loads(message.payload)["id"] == waiting["id"]
    await wait_until(lambda: _status(ext_http, ext_org, device_id, waiting["id"], "sent"))


class ClearedMeanwhile(DeviceDirectory):
    """A directory whose cache is cleared right after each look-up, as when a commit that
    touches devices (presence, a rotation) lands between the look-up and the delivery."""

    async def load(self, keys: Iterable[str]) -> dict[str, auth_cache.IngestDevice | None]:
        answer = await super().load(keys)
        auth_cache.invalidate()
        return answer


async def test_a_batch_uses_its_own_look_up_even_if_the_cache_is_cleared(
    ext_app: FastAPI, ext_http: httpx.AsyncClient, ext_org: Tenant, peer: Peer
) -> None:
    transport: ExternalTransport = ext_app.state.transport
    transport.directory.close()
    transport.directory = ClearedMeanwhile(transport.messages.database)
    device_id, _ = await new_device(ext_http, ext_org)
    peer.publish(f"devices/{device_id}/telemetry", {"first": 1.0})
    await wait_until(lambda: _has(ext_http, ext_org, device_id, "first"))
    assert await dead_letters(ext_app) == []


async def test_a_mounted_device_subscribing_gets_what_waits(
    ext_app: FastAPI, ext_http: httpx.AsyncClient, ext_org: Tenant, peer: Peer
) -> None:
    """Fleetcore's Mosquitto plugin says when a ThingsBoard device subscribes (as the
    embedded broker's hook does): the commands waiting for it go out on its mount."""
    device_id, _ = await new_device(ext_http, ext_org)
    waiting = await _command(ext_http, ext_org, device_id, "reboot", persistent=True)
    assert waiting["status"] == "queued"
    peer.subscribe(f"tb/{device_id}/v1/devices/me/rpc/request/+")
    # What the plugin publishes when the device subscribes.
    peer.publish(f"fleetcore/subscribed/{device_id}", b"v1/devices/me/rpc/request/+")
    message = await peer.next()
    assert message.topic == f"tb/{device_id}/v1/devices/me/rpc/request/{waiting['rpc_id']}"
    assert orjson.loads(message.payload)["method"] == "reboot"
