"""Rules and alerts driven through the API, for tests."""

from __future__ import annotations

from typing import Any

import httpx

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

T0 = 1_795_300_000_000  # a fixed reading time, epoch ms
HOT = {"key": "t", "op": ">", "value": 30}


async def send(http: httpx.AsyncClient, token: str, ts: int, **values: Any) -> None:
    """One reading of each value at `ts`, committed before this returns."""
    response = await http.post(
        "/api/v1/devices/me/telemetry",
        headers={"X-Device-Token": token},
        json={"ts": ts, "values": values},
    )
    assert response.status_code == 200, response.text


async def make_rule(http: httpx.AsyncClient, org: Tenant, **body: Any) -> dict[str, Any]:
    """POST /api/v1/rules as a manager; the rule."""
    body.setdefault("name", f"rule {len(str(body))}-{id(body)}")
    response = await http.post("/api/v1/rules", headers=org.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    rule: dict[str, Any] = response.json()
    return rule


async def alerts_of(http: httpx.AsyncClient, org: Tenant, **params: Any) -> list[dict[str, Any]]:
    """GET /api/v1/alerts (newest first)."""
    response = await http.get("/api/v1/alerts", headers=org.headers(Role.VIEWER), params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settled(app: Any) -> None:
    """Wait until the rules engine evaluated every committed batch."""
    engine, pipeline = app.state.rules, app.state.pipeline

    async def idle() -> bool:
        # The pipeline counts a batch pending until its after-commit handlers returned.
        return pipeline.pending == 0 and engine.idle

    await wait_until(idle, within=10)


async def wait_for_alerts(
    http: httpx.AsyncClient, org: Tenant, count: int, **params: Any
) -> list[dict[str, Any]]:
    """Wait until the list (filtered by `params`) holds `count` alerts; returns it."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        nonlocal found
        found = await alerts_of(http, org, **params)
        return len(found) >= count

    # The rules engine judges readings after their commit; on a loaded 2-core CI box that
    # has taken over 10 s. A condition, not a sleep: a quick pass costs nothing more.
    await wait_until(enough, within=30, every=0.05)
    assert len(found) == count, found
    return found
