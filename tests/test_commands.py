"""Device commands end to end: the embedded broker, raw MQTT devices, HTTP long-poll, a live
WebSocket, both databases. No mocks: every state is reached the way a device reaches it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect

from fleetcore.auth.principal import Role
from fleetcore.commands.delivery import CommandService, Refusal
from fleetcore.commands.models import CommandStatus, DeviceCommand
from fleetcore.commands.transitions import move
from fleetcore.db import Database
from tests.support.devices import new_device, port_of
from tests.support.holds import first_statement_held
from tests.support.mqtt_raw import PUBLISH, Packet, RawClient
from tests.support.postgres import PG_ONLY
from tests.support.serving import serving
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until

REBOOT_SCHEMA = {
    "type": "object",
    "properties": {"delay_s": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
}


def commands_of(app: FastAPI) -> CommandService:
    service: CommandService = app.state.commands
    return service


async def online_device(
    app: FastAPI, http: httpx.AsyncClient, org: Tenant, *, thingsboard: bool = False
) -> tuple[str, str, RawClient]:
    """A device connected over MQTT and subscribed to its commands."""
    device_id, token = await new_device(http, org)
    client = await RawClient.connected(port_of(app), f"c-{device_id[:8]}", username=token)
    topic = "v1/devices/me/rpc/request/+" if thingsboard else f"devices/{device_id}/commands"
    assert await client.subscribe(topic) == [1]
    return device_id, token, client


async def send(
    http: httpx.AsyncClient,
    org: Tenant,
    device_id: str,
    expect: int = 201,
    role: Role = Role.OPERATOR,
    **body: Any,
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/devices/{device_id}/commands", headers=org.headers(role), json=body
    )
    assert response.status_code == expect, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def fetch(
    http: httpx.AsyncClient, org: Tenant, device_id: str, command_id: str
) -> dict[str, Any]:
    response = await http.get(
        f"/api/v1/devices/{device_id}/commands/{command_id}", headers=org.headers(Role.VIEWER)
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def reaches(
    http: httpx.AsyncClient, org: Tenant, device_id: str, command_id: str, status: str
) -> dict[str, Any]:
    """The command once it has reached `status` (fails after a deadline)."""
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        seen.update(await fetch(http, org, device_id, command_id))
        return bool(seen["status"] == status)

    await wait_until(reached, within=10)
    return seen


async def received(client: RawClient) -> tuple[Packet, dict[str, Any]]:
    """The next PUBLISH a device gets (acknowledged), and its JSON payload."""
    packet = await client.expect(PUBLISH)
    if packet.qos:
        await client.puback(packet.packet_id)
    body: dict[str, Any] = orjson.loads(packet.payload)
    return packet, body


def at(command: dict[str, Any], field: str) -> datetime:
    value = command[field]
    assert value is not None, f"{field} not set: {command}"
    return datetime.fromisoformat(value)


async def audit_actions(
    http: httpx.AsyncClient, org: Tenant, command_id: str
) -> list[dict[str, Any]]:
    response = await http.get(
        "/api/v1/audit", params={"target_id": command_id}, headers=org.headers(Role.ADMIN)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_native_mqtt_round_trip(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, _, client = await online_device(mqtt_app, http, org)
    created = await send(http, org, device_id, method="reboot", params={"delay_s": 5})
    assert created["status"] == "sent"
    assert created["channel"] == "mqtt"
    packet, body = await received(client)
    assert packet.topic == f"devices/{device_id}/commands"
    assert packet.qos == 1
    assert body == {"id": created["id"], "method": "reboot", "params": {"delay_s": 5}}

    result = orjson.dumps({"status": "succeeded", "result": {"uptime_s": 0}})
    await client.publish(f"devices/{device_id}/commands/{created['id']}/result", result, qos=1)
    # The PUBACK comes after the commit: no waiting needed.
    done = await fetch(http, org, device_id, created["id"])
    assert done["status"] == "succeeded"
    assert done["result"] == {"uptime_s": 0}
    assert done["error"] is None
    stamps = [at(done, f) for f in ("created_at", "sent_at", "delivered_at", "completed_at")]
    assert stamps == sorted(stamps)
    assert done["expired_at"] is None
    assert done["cancelled_at"] is None

    failing = await send(http, org, device_id, method="selftest")
    _, body = await received(client)
    assert body["id"] == failing["id"]
    answer = orjson.dumps({"status": "failed", "error": "sensor 3 does not answer"})
    await client.publish(f"devices/{device_id}/commands/{failing['id']}/result", answer, qos=1)
    failed = await fetch(http, org, device_id, failing["id"])
    assert (failed["status"], failed["error"]) == ("failed", "sensor 3 does not answer")
    assert failed["completed_at"] is not None

    # A second answer to a finished command changes nothing.
    again = orjson.dumps({"status": "succeeded", "result": {}})
    await client.publish(f"devices/{device_id}/commands/{failing['id']}/result", again, qos=1)
    assert (await fetch(http, org, device_id, failing["id"]))["status"] == "failed"

    actions = [e["action"] for e in await audit_actions(http, org, created["id"])]
    assert set(actions) == {"command.create", "command.result"}
    device_entry = next(
        e for e in await audit_actions(http, org, created["id"]) if e["action"] == "command.result"
    )
    assert (device_entry["actor_type"], device_entry["actor_id"]) == ("device", device_id)


async def test_thingsboard_mqtt_rpc_round_trip(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, _, client = await online_device(mqtt_app, http, org, thingsboard=True)
    first = await send(http, org, device_id, method="setGpio", params={"pin": 23, "value": 1})
    second = await send(http, org, device_id, method="getGpio", params={"pin": 23})
    assert (first["channel"], second["channel"]) == ("thingsboard", "thingsboard")
    assert second["rpc_id"] == first["rpc_id"] + 1
    packet, body = await received(client)
    assert packet.topic == f"v1/devices/me/rpc/request/{first['rpc_id']}"
    assert body == {"method": "setGpio", "params": {"pin": 23, "value": 1}}
    packet, body = await received(client)
    assert packet.topic == f"v1/devices/me/rpc/request/{second['rpc_id']}"

    await client.publish(f"v1/devices/me/rpc/response/{second['rpc_id']}", b'{"value": 1}', qos=1)
    done = await fetch(http, org, device_id, second["id"])
    assert (done["status"], done["result"]) == ("succeeded", {"value": 1})
    assert (await fetch(http, org, device_id, first["id"]))["status"] == "sent"
    # An id the device never got is refused and recorded nowhere.
    await client.publish("v1/devices/me/rpc/response/999", b'{"value": 1}', qos=1)
    assert (await fetch(http, org, device_id, first["id"]))["status"] == "sent"


async def test_persistent_command_waits_for_an_offline_device(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    queued = await send(http, org, device_id, method="update", persistent=True, timeout_s=600)
    assert queued["status"] == "queued"
    assert queued["sent_at"] is None

    offline = await send(http, org, device_id, method="ping")
    assert (offline["status"], offline["error"]) == ("failed", "device offline")
    assert offline["completed_at"] is not None

    client = await RawClient.connected(port_of(mqtt_app), "late", username=token)
    assert (await fetch(http, org, device_id, queued["id"]))["status"] == "queued"
    await client.subscribe(f"devices/{device_id}/commands")
    _, body = await received(client)
    assert body["id"] == queued["id"]
    sent = await reaches(http, org, device_id, queued["id"], "sent")
    assert at(sent, "sent_at") >= at(sent, "created_at")
    result = orjson.dumps({"status": "succeeded", "result": {"version": "2.0"}})
    await client.publish(f"devices/{device_id}/commands/{queued['id']}/result", result, qos=1)
    done = await fetch(http, org, device_id, queued["id"])
    assert (done["status"], done["result"]) == ("succeeded", {"version": "2.0"})


async def test_a_resumed_session_gets_waiting_commands_without_subscribing_again(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    first = await RawClient.connected(port_of(mqtt_app), "keep", username=token, clean=False)
    assert await first.subscribe(f"devices/{device_id}/commands") == [1]
    await first.disconnect()
    await wait_until(lambda: not commands_of(mqtt_app).is_online(uuid.UUID(device_id)))
    queued = await send(http, org, device_id, method="update", persistent=True, timeout_s=600)
    assert queued["status"] == "queued"
    back = await RawClient.open(port_of(mqtt_app))
    assert await back.connect("keep", username=token, clean=False) == (0, True)
    _, body = await received(back)  # no SUBSCRIBE: the session still has it
    assert body["id"] == queued["id"]


async def test_http_long_poll_round_trip(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    device = {"X-Device-Token": token}
    empty = await http.get("/api/v1/devices/me/commands", params={"timeout": 0}, headers=device)
    assert (empty.status_code, empty.json()) == (200, {"commands": []})

    poll = asyncio.create_task(
        http.get("/api/v1/devices/me/commands", params={"timeout": 10}, headers=device)
    )
    # Waiting in a long-poll counts as online: a non-persistent command is not refused.
    await wait_until(lambda: commands_of(mqtt_app).is_online(uuid.UUID(device_id)))
    created = await send(http, org, device_id, method="blink", params={"times": 3})
    assert created["status"] in ("queued", "delivered")
    response = await poll
    assert response.status_code == 200, response.text
    assert response.json() == {
        "commands": [{"id": created["id"], "method": "blink", "params": {"times": 3}}]
    }
    delivered = await fetch(http, org, device_id, created["id"])
    assert (delivered["status"], delivered["channel"]) == ("delivered", "http")
    assert delivered["sent_at"] == delivered["delivered_at"]

    cancel = await http.post(
        f"/api/v1/devices/{device_id}/commands/{created['id']}/cancel",
        headers=org.headers(Role.OPERATOR),
    )
    assert cancel.status_code == 409, cancel.text
    assert cancel.json()["error"]["code"] == "COMMAND_NOT_CANCELLABLE"

    answered = await http.post(
        f"/api/v1/devices/me/commands/{created['id']}/result",
        headers=device,
        json={"status": "succeeded", "result": {"blinked": 3}},
    )
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"id": created["id"], "status": "succeeded"}
    again = await http.post(
        f"/api/v1/devices/me/commands/{created['id']}/result",
        headers=device,
        json={"status": "failed", "error": "late"},
    )
    assert again.status_code == 409
    done = await fetch(http, org, device_id, created["id"])
    assert (done["status"], done["result"]) == ("succeeded", {"blinked": 3})

    # Queued before the poll: returned at once, oldest first.
    first = await send(http, org, device_id, method="a", persistent=True)
    second = await send(http, org, device_id, method="b", persistent=True)
    quick = await http.get("/api/v1/devices/me/commands", params={"timeout": 5}, headers=device)
    assert [c["id"] for c in quick.json()["commands"]] == [first["id"], second["id"]]


async def test_thingsboard_http_rpc_round_trip(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    nothing = await http.get(f"/api/v1/{token}/rpc", params={"timeout": 0})
    assert nothing.status_code == 408
    queued = await send(http, org, device_id, method="setGpio", params={"pin": 1}, persistent=True)
    polled = await http.get(f"/api/v1/{token}/rpc", params={"timeout": 5000})
    assert polled.status_code == 200, polled.text
    assert polled.json() == {"id": queued["rpc_id"], "method": "setGpio", "params": {"pin": 1}}
    assert (await fetch(http, org, device_id, queued["id"]))["channel"] == "thingsboard_http"
    reply = await http.post(f"/api/v1/{token}/rpc/{queued['rpc_id']}", json={"result": "ok"})
    assert reply.status_code == 200, reply.text
    done = await fetch(http, org, device_id, queued["id"])
    assert (done["status"], done["result"]) == ("succeeded", {"result": "ok"})
    unknown = await http.post(f"/api/v1/{token}/rpc/4242", json={})
    assert unknown.status_code == 404


async def test_cancel_while_queued_and_while_sent(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    queued = await send(http, org, device_id, method="wipe", persistent=True)
    url = f"/api/v1/devices/{device_id}/commands/{queued['id']}/cancel"
    viewer = await http.post(url, headers=org.headers(Role.VIEWER))
    assert viewer.status_code == 403
    cancelled = await http.post(url, headers=org.headers(Role.OPERATOR))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled_at"] is not None
    again = await http.post(url, headers=org.headers(Role.OPERATOR))
    assert (again.status_code, again.json()["error"]["details"]) == (409, {"status": "cancelled"})

    # The device connects: the cancelled command never reaches it.
    client = await RawClient.connected(port_of(mqtt_app), "dev", username=token)
    await client.subscribe(f"devices/{device_id}/commands")
    sent = await send(http, org, device_id, method="status")
    _, body = await received(client)
    assert body["id"] == sent["id"]  # the first (and only) thing it got
    cancel_sent = await http.post(
        f"/api/v1/devices/{device_id}/commands/{sent['id']}/cancel",
        headers=org.headers(Role.OPERATOR),
    )
    assert cancel_sent.status_code == 200
    late = orjson.dumps({"status": "succeeded", "result": {}})
    await client.publish(f"devices/{device_id}/commands/{sent['id']}/result", late, qos=1)
    after = await fetch(http, org, device_id, sent["id"])
    assert (after["status"], after["completed_at"]) == ("cancelled", None)
    actions = [e["action"] for e in await audit_actions(http, org, queued["id"])]
    assert sorted(actions) == ["command.cancel", "command.create"]


async def test_concurrent_transitions_have_one_winner(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await new_device(http, org)
    queued = await send(http, org, device_id, method="x", persistent=True)
    url = f"/api/v1/devices/{device_id}/commands/{queued['id']}/cancel"
    answers = await asyncio.gather(
        *(http.post(url, headers=org.headers(Role.OPERATOR)) for _ in range(4)),
        http.get(
            "/api/v1/devices/me/commands", params={"timeout": 0}, headers={"X-Device-Token": token}
        ),
    )
    cancels = sorted(a.status_code for a in answers[:4])
    fetched = answers[4].json()["commands"]
    final = await fetch(http, org, device_id, queued["id"])
    if fetched:  # the device took it first: every cancel is refused
        assert (cancels, final["status"]) == ([409] * 4, "delivered")
    else:
        assert (cancels, final["status"]) == ([200, 409, 409, 409], "cancelled")


async def test_unanswered_commands_expire(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, _, client = await online_device(mqtt_app, http, org)
    silent = await send(http, org, device_id, method="ping", timeout_s=1)
    await received(client)  # received, never answered
    offline_id, _ = await new_device(http, org)
    waiting = await send(http, org, offline_id, method="ping", timeout_s=1, persistent=True)
    expired = await reaches(http, org, device_id, silent["id"], "expired")
    assert expired["error"] == "timed out"
    assert at(expired, "expired_at") >= at(expired, "created_at")
    assert expired["completed_at"] is None
    never_sent = await reaches(http, org, offline_id, waiting["id"], "expired")
    assert never_sent["sent_at"] is None
    result = orjson.dumps({"status": "succeeded", "result": {}})
    await client.publish(f"devices/{device_id}/commands/{silent['id']}/result", result, qos=1)
    assert (await fetch(http, org, device_id, silent["id"]))["status"] == "expired"
    actions = [e["action"] for e in await audit_actions(http, org, silent["id"])]
    assert "command.expire" in actions


async def test_allow_list_and_params_schema_refuse_before_the_device(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.MANAGER),
        json={
            "name": "pumps",
            "command_limits": {"allowed": {"reboot": REBOOT_SCHEMA, "ping": None}},
        },
    )
    assert profile.status_code == 201, profile.text
    device_id, token = await new_device(http, org, profile_id=profile.json()["id"])
    client = await RawClient.connected(port_of(mqtt_app), "guarded", username=token)
    await client.subscribe(f"devices/{device_id}/commands")

    refused = await send(http, org, device_id, 422, method="format_disk")
    assert refused["error"]["code"] == "COMMAND_NOT_ALLOWED"
    assert "format_disk" in refused["error"]["message"]
    refused = await send(http, org, device_id, 422, method="reboot", params={"delay_s": -1})
    assert refused["error"]["code"] == "INVALID_PARAMS"
    assert refused["error"]["details"]["field"] == "params.delay_s"
    assert "reboot" in refused["error"]["message"]
    refused = await send(http, org, device_id, 422, method="reboot", params={"force": True})
    assert refused["error"]["code"] == "INVALID_PARAMS"
    assert "force" in refused["error"]["message"]
    listed = await http.get(f"/api/v1/devices/{device_id}/commands", headers=org.headers())
    assert listed.json()["items"] == []  # never stored

    ping = await send(http, org, device_id, method="ping", params={"anything": [1, 2]})
    _, body = await received(client)
    assert body["id"] == ping["id"]  # nothing refused reached the device before it
    reboot = await send(http, org, device_id, method="reboot", params={"delay_s": 5})
    _, body = await received(client)
    assert body == {"id": reboot["id"], "method": "reboot", "params": {"delay_s": 5}}

    schema_fix = await http.patch(
        f"/api/v1/device-profiles/{profile.json()['id']}",
        headers=org.headers(Role.MANAGER),
        json={"command_limits": {"allowed": {"reboot": {"type": "nonsense"}}}},
    )
    assert schema_fix.status_code == 422, schema_fix.text
    assert "reboot" in schema_fix.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": ""}, "body.method"),
        ({"method": "m" * 65}, "body.method"),
        ({"method": "m", "params": {"blob": "x" * 16_400}}, "body.params"),
        ({"method": "m", "params": [1]}, "body.params"),
        ({"method": "m", "timeout_s": 0}, "body.timeout_s"),
        ({"method": "m", "timeout_s": 86_401}, "body.timeout_s"),
    ],
)
async def test_command_limits(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, body: dict[str, Any], field: str
) -> None:
    device_id, _ = await new_device(http, org)
    refused = await send(http, org, device_id, 422, **body)
    assert [e["field"] for e in refused["error"]["details"]["errors"]] == [field]


async def test_list_filter_pagination_and_roles(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, _ = await new_device(http, org)
    await send(http, org, device_id, 403, role=Role.VIEWER, method="x")
    ids = [
        (await send(http, org, device_id, method=f"m{n}", persistent=n % 2 == 0))["id"]
        for n in range(5)
    ]
    url = f"/api/v1/devices/{device_id}/commands"
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(url, params=params, headers=org.headers(Role.VIEWER))).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first
    failed = await http.get(url, params={"status": "failed"}, headers=org.headers(Role.VIEWER))
    assert [c["id"] for c in failed.json()["items"]] == [ids[3], ids[1]]


async def test_commands_of_another_organization_or_device_are_not_found(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    device_id, _, client = await online_device(mqtt_app, http, org)
    command = await send(http, org, device_id, method="open")
    await received(client)
    other = await make_tenant(http, live_database)
    base = f"/api/v1/devices/{device_id}/commands"
    for method, url in (
        ("GET", base),
        ("GET", f"{base}/{command['id']}"),
        ("POST", f"{base}/{command['id']}/cancel"),
    ):
        response = await http.request(method, url, headers=other.headers(Role.ADMIN))
        assert response.status_code == 404, (url, response.text)
    assert (await send(http, other, device_id, 404, method="x"))["error"]["code"] == (
        "DEVICE_NOT_FOUND"
    )

    # Another device (even of the same organization) cannot answer it, over HTTP or MQTT.
    intruder_id, intruder_token = await new_device(http, org)
    answered = await http.post(
        f"/api/v1/devices/me/commands/{command['id']}/result",
        headers={"X-Device-Token": intruder_token},
        json={"status": "succeeded"},
    )
    assert answered.status_code == 404
    intruder = await RawClient.connected(port_of(mqtt_app), "intruder", username=intruder_token)
    forged = orjson.dumps({"status": "succeeded", "result": {"opened": True}})
    await intruder.publish(f"devices/{intruder_id}/commands/{command['id']}/result", forged, qos=1)
    assert (await fetch(http, org, device_id, command["id"]))["status"] == "sent"


async def test_live_push_on_the_commands_channel(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, _, client = await online_device(mqtt_app, http, org)
    async with serving(mqtt_app) as host:
        url = f"ws://{host}/api/v1/ws?token={org.tokens[Role.VIEWER]}"
        async with connect(url) as ws:
            await ws.send(
                orjson.dumps(
                    {"type": "subscribe", "channel": "commands", "device_id": device_id}
                ).decode()
            )
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
            created = await send(http, org, device_id, method="beep", params={"hz": 440})
            await received(client)
            result = orjson.dumps({"status": "succeeded", "result": {"beeped": True}})
            await client.publish(
                f"devices/{device_id}/commands/{created['id']}/result", result, qos=1
            )
            messages = [orjson.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
    assert [m["status"] for m in messages] == ["queued", "sent", "succeeded"]
    last = messages[-1]
    assert last == {
        "type": "command",
        "id": created["id"],
        "device_id": device_id,
        "method": "beep",
        "status": "succeeded",
        "result": {"beeped": True},
        "error": None,
        "at": last["at"],
    }
    assert datetime.fromisoformat(last["at"]) >= datetime.fromisoformat(messages[0]["at"])


async def test_mqtt5_device_learns_why_a_result_was_refused(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    from tests.support.paho_device import PahoDevice

    device_id, token = await new_device(http, org)
    other_id, _ = await new_device(http, org)
    theirs = await send(http, org, other_id, method="update", persistent=True, timeout_s=600)
    device = PahoDevice("v5-results")
    try:
        await device.connect(port_of(mqtt_app), username=token)
        body = orjson.dumps({"status": "succeeded", "result": {}})
        unknown = await device.publish(f"devices/{device_id}/commands/{uuid.uuid4()}/result", body)
        assert unknown == 0x80  # no such command
        stolen = await device.publish(f"devices/{device_id}/commands/{theirs['id']}/result", body)
        assert stolen == 0x87  # another device's command: not authorized
        assert (await fetch(http, org, other_id, theirs["id"]))["status"] == "queued"
    finally:
        device.stop()


@PG_ONLY
async def test_a_result_waits_for_another_process_to_commit_sent(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
) -> None:
    # The api process publishes a command and commits "sent" just after; through an external
    # broker an ingest worker (another process: no shared device lock) may have the device's
    # answer first. It was refused (not_open) and the command never finished (the e2e test
    # through Mosquitto, under load). Several processes need PostgreSQL.
    device_id, _ = await new_device(live_client, live_tenant)
    made = await send(live_client, live_tenant, device_id, method="reboot", persistent=True)
    command_id = uuid.UUID(made["id"])
    device = SimpleNamespace(id=uuid.UUID(device_id), organization_id=live_tenant.org_id)
    worker = CommandService(live_database, live_app.state.live)  # its own device locks

    def status_look(statement: str) -> bool:
        return statement.startswith("SELECT device_commands.device_id, device_commands.status")

    async with first_statement_held(live_database, status_look) as hold:
        answer = asyncio.create_task(
            worker.record_result(device, command_id=command_id, succeeded=True, result={"ok": 1})
        )
        await asyncio.wait_for(hold.reached.wait(), 10)  # its move found the command queued
        async with live_database.session() as session:  # the sender's "sent", committed now
            sent = await move(
                session,
                DeviceCommand.id == command_id,
                expected=(CommandStatus.QUEUED,),
                to=CommandStatus.SENT,
                channel="mqtt",
            )
            await session.commit()
        assert len(sent) == 1
    taken = await asyncio.wait_for(answer, 10)
    assert not isinstance(taken, Refusal), taken
    assert taken.status == CommandStatus.SUCCEEDED
    shown = await fetch(live_client, live_tenant, device_id, str(command_id))
    assert shown["status"] == "succeeded"
