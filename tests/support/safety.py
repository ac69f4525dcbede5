"""A pump with a safety policy, its telemetry and alerts, for the safety gate and approval
tests (both databases, real commits)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fleetcore.alerts.models import Alert
from fleetcore.analytics.models import Recommendation
from fleetcore.auth.principal import Role
from fleetcore.commands.models import DeviceCommand
from fleetcore.db import Database
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.devices import new_device
from tests.support.tenants import Tenant

# Speed moves at most 150 rpm a step and 400 rpm within any hour; set_mode is a plain method;
# stop needs two people; no speed-up while a critical alert is open.
POLICY: dict[str, Any] = {
    "methods": {
        "set_speed": {
            "params": {
                "rpm": {
                    "type": "number",
                    "min": 0,
                    "max": 3000,
                    "key": "pump_speed",
                    "max_step": 150,
                    "max_change_per_hour": 400,
                }
            }
        },
        "set_mode": {
            "params": {
                "mode": {"type": "string", "allowed": ["eco", "normal"]},
                "force": {"type": "boolean", "required": False},
            }
        },
        "stop": {"critical": True},
    },
    "interlocks": [
        {
            "name": "no speed-up on a critical alert",
            "method": "set_speed",
            "param": "rpm",
            "direction": "increase",
            "when": {"severity_at_least": "critical"},
        }
    ],
}


async def pump(
    client: httpx.AsyncClient, tenant: Tenant, policy: dict[str, Any] | None = POLICY
) -> str:
    """A device whose profile has `policy`; returns its id."""
    profile = await client.post(
        "/api/v1/device-profiles",
        headers=tenant.headers(Role.MANAGER),
        json={"name": f"pumps {uuid.uuid4().hex[:8]}", "safety_policy": policy},
    )
    assert profile.status_code == 201, profile.text
    device_id, _ = await new_device(client, tenant, profile_id=profile.json()["id"])
    return device_id


async def report(
    database: Database,
    tenant: Tenant,
    device_id: str,
    key: str,
    value: float | str,
    *,
    ago: timedelta = timedelta(0),
) -> None:
    """Store one reading (now, or `ago`), as the pipeline would."""
    kind = Kind.TEXT if isinstance(value, str) else Kind.NUMBER
    at = time.time_ns() // 1_000_000 - int(ago.total_seconds() * 1000)
    reading = Reading(key, at, kind, value)
    item = DeviceReadings(uuid.UUID(device_id), tenant.org_id, [reading])
    await TelemetryWriter(database.engine).write([item])


async def open_alert(
    database: Database, tenant: Tenant, device_id: str, severity: str, keys: tuple[str, ...] = ()
) -> uuid.UUID:
    """An open alert on the device (the rules engine's row, without a rule)."""
    now = datetime.now(UTC)
    alert = Alert(
        organization_id=tenant.org_id,
        device_id=uuid.UUID(device_id),
        name=f"{severity} alert",
        severity=severity,
        details={"values": {key: 1 for key in keys}},
        opened_at=now,
        last_fired_at=now,
    )
    async with database.session(write=True) as session:
        session.add(alert)
        await session.commit()
    return alert.id


async def past_command(
    database: Database,
    tenant: Tenant,
    device_id: str,
    *,
    ago: timedelta,
    params: dict[str, Any],
    method: str = "set_speed",
    status: str = "succeeded",
    rpc_id: int,
) -> None:
    """A command created `ago` (the API only creates them now)."""
    created = datetime.now(UTC) - ago
    async with database.session(write=True) as session:
        session.add(
            DeviceCommand(
                organization_id=tenant.org_id,
                device_id=uuid.UUID(device_id),
                rpc_id=rpc_id,
                method=method,
                params=params,
                timeout_s=30,
                status=status,
                created_at=created,
                expires_at=created + timedelta(seconds=30),
            )
        )
        await session.commit()


async def settled(database: Database, tenant: Tenant, device_id: str, rpm: float) -> None:
    """The pump runs at `rpm`, where a command set it two hours ago: the hourly limit's start
    is known (without a command before the hour, a second one in it is refused)."""
    await report(database, tenant, device_id, "pump_speed", rpm)
    await past_command(
        database, tenant, device_id, ago=timedelta(hours=2), params={"rpm": rpm}, rpc_id=999
    )


async def recommend(
    database: Database,
    tenant: Tenant,
    device_id: str,
    *,
    kind: str = "adjust_setpoint",
    method: str | None = "set_speed",
    params: dict[str, Any] | None = None,
    expires_in: timedelta = timedelta(hours=1),
    topic: str | None = None,
) -> str:
    """A proposed recommendation, as the analytics engine would make it."""
    row = Recommendation(
        organization_id=tenant.org_id,
        device_id=uuid.UUID(device_id),
        kind=kind,
        topic=topic or f"test:{uuid.uuid4().hex[:8]}",
        title=f"{kind} on {device_id[:8]}",
        rationale="vibration rising for three days",
        method=method,
        params=params if method is not None else None,
        evidence={"finding_ids": [1, 2], "key": "vibration"},
        expires_at=datetime.now(UTC) + expires_in,
    )
    async with database.session(write=True) as session:
        session.add(row)
        await session.commit()
    return str(row.id)


async def commands_of(client: httpx.AsyncClient, tenant: Tenant, device_id: str) -> list[Any]:
    """The device's commands, newest first."""
    response = await client.get(
        f"/api/v1/devices/{device_id}/commands", headers=tenant.headers(Role.VIEWER)
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def audited(client: httpx.AsyncClient, tenant: Tenant, action: str) -> list[Any]:
    """The organization's audit events of one action, newest first."""
    response = await client.get(
        "/api/v1/audit", headers=tenant.headers(Role.ADMIN), params={"action": action}
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items
