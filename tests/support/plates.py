"""Plate reads sent the way a camera sends them (device events over HTTP), for tests."""

from __future__ import annotations

import time
from typing import Any

import httpx

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant

EVENTS = "/api/v1/devices/me/events"


async def camera(http: httpx.AsyncClient, org: Tenant, name: str = "gate") -> tuple[str, str]:
    """A camera device: (device id, device token)."""
    body = {"name": name, "serial_number": f"CAM-{time.monotonic_ns()}"}
    response = await http.post("/api/v1/devices", headers=org.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["access_token"]


def plate_read(
    plate: str, confidence: float = 0.9, ts: int | None = None, **data: Any
) -> dict[str, Any]:
    """A plate_read event."""
    event: dict[str, Any] = {
        "type": "plate_read",
        "data": {"plate": plate, "confidence": confidence, **data},
    }
    if ts is not None:
        event["ts"] = ts
    return event


async def send(http: httpx.AsyncClient, token: str, *events: dict[str, Any]) -> httpx.Response:
    """POST the events with the device's token."""
    return await http.post(EVENTS, headers={"X-Device-Token": token}, json=list(events))


async def watchlist(
    http: httpx.AsyncClient, org: Tenant, name: str, *plates: str, **fields: Any
) -> dict[str, Any]:
    """A watchlist holding these plates (made by a manager)."""
    response = await http.post(
        "/api/v1/watchlists", headers=org.headers(Role.MANAGER), json={"name": name, **fields}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    if plates:
        added = await http.post(
            f"/api/v1/watchlists/{created['id']}/entries",
            headers=org.headers(Role.OPERATOR),
            json={"entries": [{"plate": p} for p in plates]},
        )
        assert added.status_code == 201, added.text
    return created
