"""Devices made the way an operator makes them (REST API), for tests."""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant


async def new_device(http: httpx.AsyncClient, org: Tenant, **extra: Any) -> tuple[str, str]:
    """POST /api/v1/devices as a manager; returns (device id, device token)."""
    body = {"name": "sensor", "serial_number": f"S-{time.monotonic_ns()}", **extra}
    response = await http.post("/api/v1/devices", headers=org.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["access_token"]


def port_of(app: FastAPI) -> int:
    """The embedded MQTT broker's port of a running app."""
    return int(app.state.settings.mqtt_port)
