"""MQTT end to end: the app's embedded broker, real devices' tokens, both databases."""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.models import VALUE_TABLES
from fleetcore_protocol.telemetry import Kind
from tests.conftest import client_for, running_app
from tests.support.certs import self_signed
from tests.support.devices import new_device, port_of
from tests.support.holds import first_statement_held
from tests.support.mqtt_raw import CONNECT, PUBACK, PUBLISH, RawClient, packet
from tests.support.paho_device import PahoDevice
from tests.support.postgres import free_port
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


async def roomy_profile(http: httpx.AsyncClient, org: Tenant) -> str:
    """A profile whose MQTT rate limit a test's burst stays under."""
    response = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={
            "name": f"roomy-{time.monotonic_ns()}",
            "mqtt_rate_per_s": 10_000,
            "mqtt_burst": 100_000,
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def latest(http: httpx.AsyncClient, org: Tenant, device_id: str) -> dict[str, Any]:
    response = await http.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def dead_letters(
    http: httpx.AsyncClient, org: Tenant, **filters: str
) -> list[dict[str, Any]]:
    response = await http.get("/api/v1/dead-letters", headers=org.headers(), params=filters)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_telemetry_is_committed_before_the_puback(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "s1", username=token)
    await client.publish(f"devices/{device_id}/telemetry", b'{"temperature": 21.5}', qos=1)
    # No wait: the PUBACK itself says it is stored.
    values = await latest(http, org, device_id)
    assert "temperature" in str(values)


async def test_device_id_and_token_as_password(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    other_id, _ = await new_device(http, org)
    port = port_of(mqtt_app)
    await RawClient.connected(port, "a", username=device_id, password=token)
    await RawClient.connected(port, "b", username=other_id, password=token, expect=4)
    await RawClient.connected(port, "c", username="fcd_not-a-token", expect=4)
    await RawClient.connected(port, "d", expect=5)


async def test_disabled_device_is_refused_and_rotation_drops_live_sessions(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    port = port_of(mqtt_app)
    device_id, token = await new_device(http, org)
    live = await RawClient.connected(port, "r", username=token)
    rotated = await http.post(
        f"/api/v1/devices/{device_id}/credentials/rotate", headers=org.headers(Role.MANAGER)
    )
    assert rotated.status_code in (200, 201), rotated.text
    assert await live.closed_by_peer(wait_s=5)
    await RawClient.connected(port, "r", username=token, expect=4)
    new_token = rotated.json()["access_token"]
    still_live = await RawClient.connected(port, "r", username=new_token)
    disabled = await http.patch(
        f"/api/v1/devices/{device_id}",
        headers=org.headers(Role.MANAGER),
        json={"status": "disabled"},
    )
    assert disabled.status_code == 200
    assert await still_live.closed_by_peer(wait_s=5)  # disabling drops the live session
    await RawClient.connected(port, "r2", username=new_token, expect=4)


async def test_a_device_cannot_touch_another_devices_topics(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    mine, token = await new_device(http, org)
    theirs, _ = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "x", username=token)
    codes = await client.subscribe(f"devices/{theirs}/commands", f"devices/{mine}/commands", "#")
    assert codes == [0x80, 1, 0x80]
    await client.publish(f"devices/{theirs}/telemetry", b'{"t": 1}', qos=1)
    await client.publish(f"devices/{mine}/commands", b"{}", qos=1)
    assert "'t'" not in str(await latest(http, org, theirs))
    await wait_until(lambda: _reasons(http, org, mine, {"not_allowed"}), within=5)


async def _reasons(http: httpx.AsyncClient, org: Tenant, device_id: str, wanted: set[str]) -> bool:
    found = {d["reason"] for d in await dead_letters(http, org, device_id=device_id)}
    return wanted <= found


async def test_unusable_messages_become_dead_letters_and_the_connection_lives(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={
            "name": f"tight-{time.monotonic_ns()}",
            "max_payload_bytes": 256,
            "mqtt_burst": 8,
            "mqtt_rate_per_s": 0.1,
        },
    )
    assert profile.status_code == 201, profile.text
    device_id, token = await new_device(http, org, profile_id=profile.json()["id"])
    client = await RawClient.connected(port_of(mqtt_app), "d", username=token)
    base = f"devices/{device_id}"
    await client.publish(f"{base}/telemetry", b"{not json", qos=1)
    await client.publish(f"{base}/telemetry", b'{"t": "x' + b"y" * 400 + b'"}', qos=1)
    await client.publish(f"{base}/nonsense", b"{}", qos=1)
    await client.publish(f"{base}/attributes", b"[1, 2]", qos=1)
    await client.publish(f"{base}/telemetry", b'{"ok": 1}', qos=1)  # still connected, stored
    for _ in range(6):  # the burst of 8 is spent now
        await client.publish(f"{base}/telemetry", b'{"ok": 2}', qos=1)
    await wait_until(
        lambda: _reasons(
            http,
            org,
            device_id,
            {"malformed_json", "oversize", "unknown_topic", "wrong_type", "rate_limited"},
        ),
        within=5,
    )
    letters = await dead_letters(http, org, device_id=device_id, reason="malformed_json")
    assert letters[0]["payload_excerpt"] == "{not json"
    assert letters[0]["topic"] == f"{base}/telemetry"
    assert "ok" in str(await latest(http, org, device_id))


async def test_json_that_cannot_be_stored_again_is_a_dead_letter(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    """300 levels: orjson reads them and cannot write them back (found by fuzzing)."""
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "deep", username=token)
    deep = b'{"a": ' + b"[" * 300 + b"1" + b"]" * 300 + b"}"
    base = f"devices/{device_id}"
    for topic in (f"{base}/attributes", f"{base}/commands/{uuid.uuid4()}/result"):
        await client.publish(topic, deep, qos=1)
    await client.publish(f"{base}/telemetry", b'{"ok": 1}', qos=1)  # the connection lives
    await wait_until(lambda: _reasons(http, org, device_id, {"unstorable_json"}), within=5)
    letters = await dead_letters(http, org, device_id=device_id, reason="unstorable_json")
    assert len(letters) == 2
    assert "nested deeper than 32" in letters[0]["detail"]
    assert "ok" in str(await latest(http, org, device_id))


async def test_thingsboard_telemetry_attributes_and_attribute_request(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    shared = await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json={"interval": 30},
    )
    assert shared.status_code == 200, shared.text
    client = await RawClient.connected(port_of(mqtt_app), "tb", username=token)
    assert await client.subscribe(
        "v1/devices/me/attributes/response/+", "v1/devices/me/attributes"
    ) == [1, 1]
    await client.publish(
        "v1/devices/me/telemetry", b'{"ts": 1795300000000, "values": {"rpm": 900}}', qos=1
    )
    await client.publish("v1/devices/me/attributes", b'{"fw": "1.2.0"}', qos=1)
    await client.publish(
        "v1/devices/me/attributes/request/7",
        b'{"clientKeys": "fw", "sharedKeys": "interval"}',
        qos=1,
    )
    response = await client.expect(PUBLISH)
    assert response.topic == "v1/devices/me/attributes/response/7"
    assert orjson.loads(response.payload) == {"client": {"fw": "1.2.0"}, "shared": {"interval": 30}}
    assert "rpm" in str(await latest(http, org, device_id))
    # A shared attribute change is pushed to the device, and to no one else.
    await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json={"interval": 60},
    )
    update = await client.expect(PUBLISH)
    assert (update.topic, orjson.loads(update.payload)) == (
        "v1/devices/me/attributes",
        {"interval": 60},
    )


async def test_an_attribute_request_is_answered_after_the_devices_earlier_attributes(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    # A broker may acknowledge the attributes before they are written (QoS 0 here; an
    # external broker always): the request behind them must still see them. Its answer,
    # taken while the write was held, lacked them (the e2e test through Mosquitto, under load).
    _, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "tb-order", username=token)
    assert await client.subscribe("v1/devices/me/attributes/response/+") == [1]

    def attributes_written(statement: str) -> bool:
        return statement.startswith(("INSERT INTO device_attributes", "UPDATE device_attributes"))

    async with first_statement_held(live_database, attributes_written) as hold:
        await client.publish("v1/devices/me/attributes", b'{"fw": "2.0.0"}')
        await asyncio.wait_for(hold.reached.wait(), 10)
        await client.publish("v1/devices/me/attributes/request/9", b'{"clientKeys": "fw"}')
        # Nothing may answer while the write waits (answered at once before: a few ms).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.expect(PUBLISH), 1.0)
    response = await client.expect(PUBLISH)
    assert response.topic == "v1/devices/me/attributes/response/9"
    assert orjson.loads(response.payload) == {"client": {"fw": "2.0.0"}}


async def test_native_config_is_retained_desired_state(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json={"setpoint": 4.5},
    )
    client = await RawClient.connected(port_of(mqtt_app), "cfg", username=token)
    assert await client.subscribe(f"devices/{device_id}/config") == [1]
    first = await client.expect(PUBLISH)
    assert first.retain
    assert orjson.loads(first.payload)["shared"] == {"setpoint": 4.5}
    await http.put(
        f"/api/v1/devices/{device_id}/attributes/shared",
        headers=org.headers(Role.MANAGER),
        json={"setpoint": 5.0},
    )
    second = await client.expect(PUBLISH)
    assert orjson.loads(second.payload)["shared"] == {"setpoint": 5.0}
    await client.puback(second.packet_id)


async def test_get_session_limits_and_unknown_client_rpc(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    _, token = await new_device(http, org)
    client = await RawClient.connected(port_of(mqtt_app), "rpc", username=token)
    assert await client.subscribe("v1/devices/me/rpc/response/+") == [1]
    await client.publish(
        "v1/devices/me/rpc/request/1", b'{"method": "getSessionLimits", "params": {}}', qos=1
    )
    limits = await client.expect(PUBLISH)
    assert limits.topic == "v1/devices/me/rpc/response/1"
    body = orjson.loads(limits.payload)
    assert body["maxPayloadSize"] == 65536
    assert body["rateLimits"]["messages"]
    await client.publish("v1/devices/me/rpc/request/2", b'{"method": "selfDestruct"}', qos=1)
    error = await client.expect(PUBLISH)
    assert "unknown method" in orjson.loads(error.payload)["error"]


async def test_thingsboard_provisioning_over_mqtt(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={"name": f"prov-{time.monotonic_ns()}", "provisioning_enabled": True},
    )
    assert profile.status_code == 201, profile.text
    key, secret = profile.json()["provision_key"], profile.json()["provision_secret"]
    port = port_of(mqtt_app)
    client = await RawClient.connected(port, "prov", username="provision")
    assert await client.subscribe("/provision/response", "v1/devices/me/telemetry") == [1, 0x80]
    request = {
        "deviceName": "SN-PROV-1",
        "provisionDeviceKey": key,
        "provisionDeviceSecret": secret,
    }
    await client.publish("/provision/request", orjson.dumps(request), qos=1)
    answer = orjson.loads((await client.expect(PUBLISH)).payload)
    assert answer["status"] == "SUCCESS"
    device = await RawClient.connected(port, "new", username=answer["credentialsValue"])
    await device.publish("v1/devices/me/telemetry", b'{"hello": 1}', qos=1)
    wrong = dict(request, provisionDeviceSecret="nope", deviceName="SN-PROV-2")
    await client.publish("/provision/request", orjson.dumps(wrong), qos=1)
    assert orjson.loads((await client.expect(PUBLISH)).payload)["status"] == "FAILURE"


async def test_events_and_status_are_recorded(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    will = (f"devices/{device_id}/status", b"offline", 1, False)
    client = await RawClient.connected(port_of(mqtt_app), "ev", username=token, will=will)
    await client.publish(f"devices/{device_id}/status", b"online", qos=1)
    await client.publish(
        f"devices/{device_id}/events", b'{"type": "door_open", "data": {"door": 2}}', qos=1
    )
    await client.close()  # abnormal: the will says offline

    async def recorded() -> bool:
        response = await http.get(f"/api/v1/devices/{device_id}/events", headers=org.headers())
        kinds = [(e["type"], (e.get("data") or {}).get("status")) for e in response.json()["items"]]
        return {("door_open", None), ("status", "online"), ("status", "offline")} <= set(kinds)

    await wait_until(recorded, within=5)


async def test_acknowledged_messages_survive_a_stop_right_after(
    live_database: Database, tmp_path: Path
) -> None:
    port, total, base_ts = free_port(), 500, 1_795_300_000_000
    async with (
        running_app(live_database, tmp_path, mqtt_port=port) as application,
        client_for(application) as http,
    ):
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org, profile_id=await roomy_profile(http, org))
        client = await RawClient.connected(port, "stop", username=token)
        for i in range(total):
            body = orjson.dumps({"ts": base_ts + i, "values": {"n": i}})
            await client.publish(f"devices/{device_id}/telemetry", body, qos=1, wait=False)
        for _ in range(total):
            await client.expect(PUBACK)
        # the app stops the moment the last PUBACK is read
    await RawClient.close_all()
    async with live_database.session() as session:
        stored = await session.scalar(select(func.count()).select_from(VALUE_TABLES[Kind.NUMBER]))
    assert stored == total


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


async def test_tls_and_websocket_listeners(
    live_database: Database, tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    tls_port, ws_port = free_port(), free_port()
    cert, key = certificate
    async with (
        running_app(
            live_database,
            tmp_path,
            mqtt_port=free_port(),
            mqtt_tls_port=tls_port,
            mqtt_tls_cert=cert,
            mqtt_tls_key=key,
            mqtt_ws_port=ws_port,
        ) as application,
        client_for(application) as http,
    ):
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=context)
        client = RawClient(reader, writer)
        assert (await client.connect("tls", username=token))[0] == 0
        await client.publish(f"devices/{device_id}/telemetry", b'{"over_tls": 1}', qos=1)
        device = PahoDevice("ws-device", mqtt5=False, transport="websockets")
        try:
            await device.connect(ws_port, username=token)
            assert await device.publish("v1/devices/me/telemetry", b'{"over_ws": 1}') == 0
        finally:
            device.stop()
        stored = await latest(http, org, device_id)
        assert "over_tls" in str(stored)
        assert "over_ws" in str(stored)
        await RawClient.close_all()


@pytest.mark.parametrize(
    ("client_id", "username"),
    [
        (b"\xff\xfe-not-utf8", None),  # a client id that is not UTF-8
        (b"esp32-\x00-nul", None),  # U+0000 is not allowed in MQTT text
        (b"esp32-ok", b"\xc3\x28"),  # a user name that is not UTF-8
    ],
)
async def test_a_311_connect_with_malformed_text_is_closed_unanswered(
    mqtt_app: FastAPI,
    http: httpx.AsyncClient,
    org: Tenant,
    client_id: bytes,
    username: bytes | None,
) -> None:
    """MQTT 3.1.1 [MQTT-1.5.3-1]: malformed UTF-8 closes the connection without a CONNACK
    (amqtt accepted such a client id as the text "b'...'", even with a valid token)."""
    _, token = await new_device(http, org)
    user = username if username is not None else token.encode()
    header = struct.pack("!H", 4) + b"MQTT" + bytes([4, 0x02 | 0x80]) + struct.pack("!H", 60)
    payload = struct.pack("!H", len(client_id)) + client_id + struct.pack("!H", len(user)) + user
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(mqtt_app))
    writer.write(packet(CONNECT, 0, header + payload))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # everything until the broker closes
    writer.close()
    assert answer == b""  # no CONNACK at all
    # The same CONNECT with well-formed text is accepted.
    accepted = await RawClient.open(port_of(mqtt_app))
    code, _ = await accepted.connect("esp32-ok", username=token)
    assert code == 0
