"""The safety gate on POST /api/v1/devices/{id}/commands: every rule family reached through
the API, the ways around it that must not work, and what a refusal leaves (nothing but an
audit event). Both databases, real commits (the context is read from stored telemetry,
commands and alerts)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import uuid
from datetime import timedelta
from typing import Any

import httpx
import orjson
from fastapi import FastAPI

from fleetcore.attributes.models import DeviceAttribute
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.devices import new_device, port_of
from tests.support.mqtt_raw import PUBLISH, RawClient
from tests.support.safety import (
    POLICY,
    audited,
    commands_of,
    open_alert,
    past_command,
    pump,
    report,
    settled,
)
from tests.support.tenants import Tenant, make_tenant


async def command(
    client: httpx.AsyncClient,
    tenant: Tenant,
    device_id: str,
    method: str,
    role: Role = Role.OPERATOR,
    **params: Any,
) -> httpx.Response:
    return await client.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=tenant.headers(role),
        json={"method": method, "params": params, "persistent": True},
    )


def refused(response: httpx.Response) -> list[str]:
    """The reason codes of a SAFETY_REFUSED answer."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "SAFETY_REFUSED", error
    return [reason["code"] for reason in error["details"]["reasons"]]


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_method_the_policy_does_not_list_is_refused_stored_nowhere_and_audited(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id = await pump(live_client, live_tenant)
    answer = await command(live_client, live_tenant, device_id, "format_disk")
    assert refused(answer) == ["METHOD_NOT_ALLOWED"]
    reason = answer.json()["error"]["details"]["reasons"][0]
    assert reason["details"]["allowed"] == ["set_mode", "set_speed", "stop"]
    # A different case is a different method.
    assert refused(await command(live_client, live_tenant, device_id, "Set_Speed")) == [
        "METHOD_NOT_ALLOWED"
    ]
    assert await commands_of(live_client, live_tenant, device_id) == []
    events = await audited(live_client, live_tenant, "command.safety_refused")
    assert len(events) == 2
    assert events[-1]["outcome"] == "denied"
    assert events[-1]["target_id"] == device_id
    assert events[-1]["details"]["method"] == "format_disk"
    assert events[-1]["details"]["reasons"] == ["METHOD_NOT_ALLOWED"]
    assert events[-1]["actor_id"] == str(live_tenant.user_ids[Role.OPERATOR])


async def test_params_out_of_range_of_the_wrong_type_or_unknown_are_refused(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await report(live_database, live_tenant, device_id, "pump_speed", 2950)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rpm": 3001}, "PARAM_ABOVE_MAX"),
        ({"rpm": -1}, "PARAM_BELOW_MIN"),
        ({"rpm": "2950"}, "PARAM_WRONG_TYPE"),  # a string is not a number
        ({"rpm": True}, "PARAM_WRONG_TYPE"),  # nor is a boolean (JSON true is not 1)
        ({"rpm": None}, "PARAM_WRONG_TYPE"),
        ({"rpm": [2950]}, "PARAM_WRONG_TYPE"),
        ({"rpm": 1e16}, "PARAM_TOO_LARGE"),  # (past 64 bits is refused before: 422)
        ({}, "PARAM_MISSING"),
        ({"rpm": 2950, "boost": True}, "PARAM_UNKNOWN"),  # an extra param cannot ride along
    ]
    for params, code in cases:
        assert code in refused(
            await command(live_client, live_tenant, device_id, "set_speed", **params)
        ), params
    mode = await command(live_client, live_tenant, device_id, "set_mode", mode="turbo")
    assert refused(mode) == ["PARAM_VALUE_NOT_ALLOWED"]
    mode = await command(live_client, live_tenant, device_id, "set_mode", mode="eco", force="yes")
    assert refused(mode) == ["PARAM_WRONG_TYPE"]
    assert await commands_of(live_client, live_tenant, device_id) == []
    created(await command(live_client, live_tenant, device_id, "set_mode", mode="eco", force=True))


async def test_non_finite_numbers_never_become_a_command(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await report(live_database, live_tenant, device_id, "pump_speed", 1000)
    for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e999"):
        body = b'{"method": "set_speed", "persistent": true, "params": {"rpm": ' + literal + b"}}"
        answer = await live_client.post(
            f"/api/v1/devices/{device_id}/commands",
            headers={**live_tenant.headers(Role.OPERATOR), "Content-Type": "application/json"},
            content=body,
        )
        assert answer.status_code in (400, 422), (literal, answer.text)
    assert await commands_of(live_client, live_tenant, device_id) == []


async def test_a_step_is_measured_from_the_latest_telemetry_value(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    # No current value: a limited setpoint cannot be bounded.
    assert refused(await command(live_client, live_tenant, device_id, "set_speed", rpm=100)) == [
        "CURRENT_VALUE_UNKNOWN"
    ]
    await report(live_database, live_tenant, device_id, "pump_speed", 900)
    await settled(live_database, live_tenant, device_id, 1000)  # the newest reading counts
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1151)
    assert refused(answer) == ["STEP_TOO_LARGE"]
    reason = answer.json()["error"]["details"]["reasons"][0]["details"]
    assert (reason["from"], reason["origin"], reason["limit"]) == (1000, "current", 150)
    done = created(await command(live_client, live_tenant, device_id, "set_speed", rpm=1150))
    assert done["status"] == "queued"
    # The queued command's target is where the device is heading: a step from it too.
    assert refused(await command(live_client, live_tenant, device_id, "set_speed", rpm=999)) == [
        "STEP_TOO_LARGE"
    ]


async def test_telemetry_wins_over_a_client_attribute_which_fills_a_gap(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    async with live_database.session(write=True) as session:
        for scope, value in (("client", 500), ("shared", 2000), ("server", 2000)):
            session.add(
                DeviceAttribute(
                    device_id=uuid.UUID(device_id),
                    scope=scope,
                    key="pump_speed",
                    value=value,
                    version=1,
                )
            )
        await session.commit()
    # Only the client attribute (what the device says of itself) counts: 500, not 2000.
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1900)
    assert "STEP_TOO_LARGE" in refused(answer)
    reasons = answer.json()["error"]["details"]["reasons"]
    assert [r["details"]["from"] for r in reasons if r["code"] == "STEP_TOO_LARGE"] == [500]
    created(await command(live_client, live_tenant, device_id, "set_speed", rpm=600))
    await report(live_database, live_tenant, device_id, "pump_speed", 1000)
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=700)
    reasons = answer.json()["error"]["details"]["reasons"]
    steps = [r["details"] for r in reasons if r["code"] == "STEP_TOO_LARGE"]
    assert [(d["origin"], d["from"]) for d in steps] == [("current", 1000)]


async def test_the_hourly_limit_counts_every_command_of_the_hour(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await settled(live_database, live_tenant, device_id, 1000)
    # Back and forth, 100 rpm each: 400 rpm of movement is the hour's allowance.
    for rpm in (1100, 1000, 1100, 1000):
        created(await command(live_client, live_tenant, device_id, "set_speed", rpm=rpm))
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1100)
    assert refused(answer) == ["RATE_TOO_HIGH"]
    details = answer.json()["error"]["details"]["reasons"][0]["details"]
    assert (details["movement"], details["limit"], details["commands_in_hour"]) == (500, 400, 4)
    assert len(await commands_of(live_client, live_tenant, device_id)) == 5  # the old one too


async def test_the_hour_starts_at_the_latest_earlier_command(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await report(live_database, live_tenant, device_id, "pump_speed", 1000)
    await past_command(
        live_database,
        live_tenant,
        device_id,
        ago=timedelta(minutes=30),
        params={"rpm": 1000},
        rpc_id=1,
    )
    # A command in the hour set the speed, and nothing says where it started: refused.
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1050)
    assert refused(answer) == ["RATE_BASELINE_UNKNOWN"]
    # The gate finds the latest command before the hour (among older ones, and not a
    # cancelled one): 700 -> 1000 -> 1050 is 350 rpm, within 400.
    for minutes, rpm, status, rpc_id in (
        (180, 400, "succeeded", 2),
        (90, 700, "succeeded", 3),
        (80, 1000, "cancelled", 4),
    ):
        await past_command(
            live_database,
            live_tenant,
            device_id,
            ago=timedelta(minutes=minutes),
            params={"rpm": rpm},
            status=status,
            rpc_id=rpc_id,
        )
    created(await command(live_client, live_tenant, device_id, "set_speed", rpm=1050))
    # 350 + 100 > 400
    assert refused(await command(live_client, live_tenant, device_id, "set_speed", rpm=1150)) == [
        "RATE_TOO_HIGH"
    ]


async def test_without_an_earlier_command_the_hour_starts_at_its_reading(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    """A device never commanded before: the speed it reported when the hour began is where
    the hour's movement starts, so a second command in the hour is judged, not refused for
    want of a starting point."""
    device_id = await pump(live_client, live_tenant)
    await report(live_database, live_tenant, device_id, "pump_speed", 900, ago=timedelta(hours=3))
    await report(live_database, live_tenant, device_id, "pump_speed", 1000, ago=timedelta(hours=2))
    await report(live_database, live_tenant, device_id, "pump_speed", 1000)
    for rpm in (1100, 1000, 1150):  # 100 + 100 + 150 = 350 rpm from 1000
        created(await command(live_client, live_tenant, device_id, "set_speed", rpm=rpm))
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1050)
    assert refused(answer) == ["RATE_TOO_HIGH"]
    details = answer.json()["error"]["details"]["reasons"][0]["details"]
    assert (details["movement"], details["commands_in_hour"]) == (450, 3)


async def test_an_open_critical_alert_holds_the_interlock(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await settled(live_database, live_tenant, device_id, 1000)
    await open_alert(live_database, live_tenant, device_id, "major")
    created(await command(live_client, live_tenant, device_id, "set_speed", rpm=1010))
    await open_alert(live_database, live_tenant, device_id, "critical", keys=("vibration",))
    answer = await command(live_client, live_tenant, device_id, "set_speed", rpm=1020)
    assert refused(answer) == ["INTERLOCK_ACTIVE"]
    details = answer.json()["error"]["details"]["reasons"][0]["details"]
    assert details["alerts"] == [
        {"rule": "critical alert", "severity": "critical", "key": "vibration"}
    ]
    # Slowing down is what the interlock allows.
    created(await command(live_client, live_tenant, device_id, "set_speed", rpm=950))


async def test_a_critical_method_needs_two_people_so_no_direct_call_passes(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id = await pump(live_client, live_tenant)
    for role in (Role.OPERATOR, Role.ADMIN):
        codes = refused(await command(live_client, live_tenant, device_id, "stop", role=role))
        assert codes == ["APPROVAL_BY_REQUESTER", "APPROVALS_MISSING"]
    assert await commands_of(live_client, live_tenant, device_id) == []


async def test_who_may_not_send_and_whose_device_it_is_come_first(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await pump(live_client, live_tenant)
    await report(live_database, live_tenant, device_id, "pump_speed", 1000)
    viewer = await command(live_client, live_tenant, device_id, "set_speed", Role.VIEWER, rpm=1010)
    assert viewer.status_code == 403, viewer.text
    intruder = await make_tenant(live_client, live_database)
    other = await command(live_client, intruder, device_id, "set_speed", Role.ADMIN, rpm=1010)
    assert other.status_code == 404, other.text
    assert await commands_of(live_client, live_tenant, device_id) == []
    assert await audited(live_client, live_tenant, "command.safety_refused") == []


async def test_a_profile_without_a_policy_keeps_the_allow_list_only(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id = await pump(live_client, live_tenant, policy=None)
    for method in ("format_disk", "stop"):
        created(await command(live_client, live_tenant, device_id, method, anything=[1, "x"]))
    # The empty policy is a policy: it allows nothing.
    empty = await pump(live_client, live_tenant, policy={})
    assert refused(await command(live_client, live_tenant, empty, "stop")) == ["METHOD_NOT_ALLOWED"]


async def test_concurrent_commands_cannot_both_pass_the_hourly_limit(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    policy = copy.deepcopy(POLICY)
    policy["methods"]["set_speed"]["params"]["rpm"]["max_change_per_hour"] = 150
    device_id = await pump(live_client, live_tenant, policy=policy)
    await settled(live_database, live_tenant, device_id, 1000)
    # Whatever order they are judged in, 1100 and 900 both accepted would move 300 > 150.
    targets = [1100, 900] * 5
    answers = await asyncio.gather(
        *(command(live_client, live_tenant, device_id, "set_speed", rpm=rpm) for rpm in targets)
    )
    codes = [a.status_code for a in answers]
    assert set(codes) == {201, 422}, [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 422:
            assert set(refused(answer)) <= {"RATE_TOO_HIGH", "STEP_TOO_LARGE"}
    # In the order they were stored, the accepted commands move the speed at most 150 rpm.
    stored = await commands_of(live_client, live_tenant, device_id)
    stored = sorted((c for c in stored if c["rpc_id"] != 999), key=lambda c: c["rpc_id"])
    assert len(stored) == codes.count(201)
    path = [1000] + [c["params"]["rpm"] for c in stored]
    assert sum(abs(b - a) for a, b in itertools.pairwise(path)) <= 150


async def test_a_refused_command_never_reaches_the_device(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    profile = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.MANAGER),
        json={"name": "pumps", "safety_policy": POLICY},
    )
    assert profile.status_code == 201, profile.text
    device_id, token = await new_device(http, org, profile_id=profile.json()["id"])
    client = await RawClient.connected(port_of(mqtt_app), "gated", username=token)
    assert await client.subscribe(f"devices/{device_id}/commands") == [1]
    await report(live_database, org, device_id, "pump_speed", 1000)
    refused(await command(http, org, device_id, "set_speed", rpm=2000))
    refused(await command(http, org, device_id, "stop"))
    sent = created(await command(http, org, device_id, "set_speed", rpm=1100))
    packet = await client.expect(PUBLISH)
    # The first thing the device hears is the accepted command: nothing refused went before.
    assert orjson.loads(packet.payload)["id"] == sent["id"]
