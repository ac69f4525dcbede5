"""Machines watched by analytics, for tests: a profile with analytics settings, seeded
readings sent over HTTP, waiting until the engine judged every committed batch, and a
reader held mid-way on the real database (to commit a batch while the engine reads)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import update

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.devices.models import DeviceProfile
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

MIN = 60_000
T0 = 1_795_300_000_000 - 1_795_300_000_000 % 86_400_000  # a midnight, epoch ms


async def watched_profile(
    http: httpx.AsyncClient,
    org: Tenant,
    database: Database,
    analytics: dict[str, Any],
    telemetry_keys: list[dict[str, Any]] | None = None,
) -> str:
    """A profile whose devices analytics watches as `analytics` says; its id."""
    body: dict[str, Any] = {"name": f"machine {uuid.uuid4().hex[:8]}", "out_of_range": "flag"}
    if telemetry_keys is not None:
        body["telemetry_keys"] = telemetry_keys
    response = await http.post(
        "/api/v1/device-profiles", headers=org.headers(Role.MANAGER), json=body
    )
    assert response.status_code == 201, response.text
    profile_id = response.json()["id"]
    async with database.session(write=True) as session:
        await session.execute(
            update(DeviceProfile)
            .where(DeviceProfile.id == uuid.UUID(profile_id))
            .values(analytics=analytics)
        )
        await session.commit()
    return str(profile_id)


def noise(seed: int, count: int, level: float = 10.0, sd: float = 0.2) -> list[float]:
    """`count` seeded Gaussian readings around `level`."""
    rng = random.Random(seed)
    return [round(rng.gauss(level, sd), 4) for _ in range(count)]


async def send_series(
    http: httpx.AsyncClient,
    token: str,
    key: str,
    values: list[float],
    *,
    start: int = T0,
    step: int = MIN,
    extra: dict[str, float] | None = None,
) -> None:
    """One reading a `step` apart for each value, in pages of 500, committed on return."""
    for first in range(0, len(values), 500):
        body = [
            {"ts": start + (first + i) * step, "values": {key: value, **(extra or {})}}
            for i, value in enumerate(values[first : first + 500])
        ]
        response = await http.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=body
        )
        assert response.status_code == 200, response.text


async def judged(app: FastAPI) -> None:
    """Wait until the pipeline is empty and the analytics engine idle. Never early: the
    pipeline counts a batch until its after-commit handlers returned, the engine counts it
    from on_committed until judged, and a health reading it writes is in the pipeline first."""
    engine, pipeline = app.state.analytics, app.state.pipeline

    async def idle() -> bool:
        return pipeline.pending == 0 and engine.idle

    await wait_until(idle, within=30)
