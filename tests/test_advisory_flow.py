"""From readings to a command, end to end on the running application (both databases): the
engine proposes, people approve through the API, the safety gate passes or refuses, the
command is sent and answered, and the recommendation follows it to its end."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.analytics import judged, noise, send_series
from tests.support.devices import new_device
from tests.support.tenants import Tenant

ANALYTICS: dict[str, Any] = {
    "keys": {"temp": {}},
    "recommend": [
        {
            "on": "range",
            "key": "temp",
            "kind": "reduce_speed",
            "title": "Slow down: {key} too hot",
            "method": "set_speed",
            "params": {"rpm": {"from_key": "speed", "times": 0.9}},
        },
        {"on": "range", "key": "temp", "kind": "stop", "title": "Stop", "method": "stop"},
        {
            "on": "range",
            "key": "temp",
            "kind": "adjust_setpoint",
            "title": "Far too slow",
            "method": "set_speed",
            "params": {"rpm": {"from_key": "speed", "times": 0.5}},
        },
    ],
}
POLICY: dict[str, Any] = {
    "methods": {
        "set_speed": {
            "params": {
                "rpm": {
                    "type": "number",
                    "min": 0,
                    "max": 3000,
                    "key": "speed",
                    "max_step_relative": 0.15,
                }
            }
        },
        "stop": {"critical": True},
    }
}


async def _proposals(http: httpx.AsyncClient, org: Tenant) -> dict[str, dict[str, Any]]:
    answer = await http.get(
        "/api/v1/recommendations", headers=org.headers(Role.VIEWER), params={"status": "proposed"}
    )
    assert answer.status_code == 200, answer.text
    return {item["kind"]: item for item in answer.json()["items"]}


async def _approve(
    http: httpx.AsyncClient, org: Tenant, role: Role, recommendation: dict[str, Any]
) -> httpx.Response:
    return await http.post(
        f"/api/v1/recommendations/{recommendation['id']}/approve",
        headers=org.headers(role),
        json={"note": "seen on site"},
    )


async def test_a_proposal_becomes_a_command_only_through_people_and_the_gate(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    profile = await live_client.post(
        "/api/v1/device-profiles",
        headers=live_tenant.headers(Role.MANAGER),
        json={
            "name": "motors",
            "out_of_range": "flag",
            "telemetry_keys": [
                {"key": "temp", "type": "number", "max": 80},
                {"key": "speed", "type": "number"},
            ],
            "analytics": ANALYTICS,
            "safety_policy": POLICY,
        },
    )
    assert profile.status_code == 201, profile.text
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile.json()["id"])
    values = noise(11, 60, level=60, sd=1)
    values[40] = 95.0
    await send_series(live_client, token, "temp", values, extra={"speed": 1500.0})
    await judged(live_app)
    waiting = await _proposals(live_client, live_tenant)
    assert set(waiting) == {"reduce_speed", "stop", "adjust_setpoint"}
    slow, stop, halve = waiting["reduce_speed"], waiting["stop"], waiting["adjust_setpoint"]
    assert slow["params"] == {"rpm": 1350.0}
    assert slow["device_id"] == device_id
    assert slow["evidence"]["finding"]["method"] == "range"

    # Nothing is sent before people decide: the device has no command.
    commands = await live_client.get(
        f"/api/v1/devices/{device_id}/commands", headers=live_tenant.headers(Role.VIEWER)
    )
    assert commands.json()["items"] == []

    # A viewer may not approve; the gate refuses halving the speed (a step of 50 %).
    assert (await _approve(live_client, live_tenant, Role.VIEWER, slow)).status_code == 403
    refused = await _approve(live_client, live_tenant, Role.OPERATOR, halve)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "SAFETY_REFUSED"
    reasons = refused.json()["error"]["details"]["reasons"]
    assert [r["code"] for r in reasons] == ["STEP_TOO_LARGE_RELATIVE"]

    # One operator approves the slow-down: its command goes out through the gate.
    approved = await _approve(live_client, live_tenant, Role.OPERATOR, slow)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    command_id = approved.json()["command_id"]
    polled = await live_client.get(
        "/api/v1/devices/me/commands", headers={"X-Device-Token": token}, params={"wait": 0}
    )
    assert polled.status_code == 200, polled.text
    [command] = polled.json()["commands"]
    assert (command["id"], command["method"], command["params"]) == (
        command_id,
        "set_speed",
        {"rpm": 1350.0},
    )
    answered = await live_client.post(
        f"/api/v1/devices/me/commands/{command_id}/result",
        headers={"X-Device-Token": token},
        json={"status": "succeeded", "result": {"rpm": 1350}},
    )
    assert answered.status_code == 200, answered.text
    await live_app.state.jobs.run_once("recommendations.sync")
    done = await live_client.get(
        f"/api/v1/recommendations/{slow['id']}", headers=live_tenant.headers(Role.VIEWER)
    )
    assert done.json()["status"] == "executed"

    # Stopping is critical: one person is not enough, the same person twice neither.
    first = await _approve(live_client, live_tenant, Role.OPERATOR, stop)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "proposed"
    again = await _approve(live_client, live_tenant, Role.OPERATOR, stop)
    assert again.status_code == 422
    assert "APPROVAL_DUPLICATE" in [r["code"] for r in again.json()["error"]["details"]["reasons"]]
    second = await _approve(live_client, live_tenant, Role.MANAGER, stop)
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "approved"
    assert second.json()["command_id"] is not None
