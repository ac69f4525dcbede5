"""The device lane (fleetcore.web.device_lane): telemetry ingest served ahead of the general
middleware stack answers exactly as the general stack does, with the request id, the
security headers, the metrics, the access line, usage metering and plan quotas.

Parity is checked by sending each request twice: once plainly (the lane serves it) and once
with an Origin header, which the lane leaves to the general stack (CORS is off here, so the
header changes nothing else)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from prometheus_client import REGISTRY

from fleetcore.db import Database
from fleetcore.usage.kinds import UsageKind
from fleetcore.web.device_lane import DeviceLane
from tests.conftest import client_for, running_app
from tests.support.devices import new_device
from tests.support.tenants import Tenant, make_superuser, make_tenant
from tests.test_plans import put_on_plan

PATH = "/api/v1/devices/me/telemetry"
TB_ROUTE = "/api/v1/{token}/telemetry"
GENERAL = {"Origin": "http://device.example"}  # sends a request the general way
SECURITY = {
    "content-security-policy",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "cross-origin-opener-policy",
}


def _requests(route: str, status: int) -> float:
    labels = {"method": "POST", "route": route, "status": str(status)}
    return REGISTRY.get_sample_value("fleetcore_http_requests_total", labels) or 0.0


def _shape(response: httpx.Response) -> tuple[int, Any, set[str]]:
    """Status, body (request id left out) and the names of the headers that are not
    per-response (date, length)."""
    body = response.json()
    if "error" in body:
        assert body["error"].pop("request_id") == response.headers["x-request-id"]
    names = set(response.headers) - {"date", "content-length", "server"}
    return response.status_code, body, names


def _lane_of(app: FastAPI) -> DeviceLane:
    stack = app.middleware_stack
    assert isinstance(stack, DeviceLane), "the device lane is not in front of the stack"
    return stack


async def test_every_answer_is_the_general_stacks(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    _, token = await new_device(live_client, live_tenant)
    device = {"X-Device-Token": token}
    now = int(time.time() * 1000)
    cases: list[tuple[str, dict[str, str], bytes]] = [
        (PATH, device, b'{"ts": %d, "values": {"t": 21.5}}'),  # stored
        (PATH, device, b'[{"ts": %d, "values": {"t": 1}}, {"ts": 1, "values": {"t": 2}}]'),
        (PATH, {}, b'{"ts": %d, "values": {"t": 1}}'),  # no token: 401
        (PATH, {"X-Device-Token": "fcd_nope"}, b'{"ts": %d, "values": {"t": 1}}'),  # 401
        (PATH, {"Authorization": f"Bearer {token}"}, b'{"ts": %d, "values": {"u": 1}}'),
        (PATH, device, b'{"ts": %d, "values": '),  # malformed JSON
        (PATH, device, b'{"ts": %d, "values": {}}'),  # no reading
        (PATH, device, b'{"ts": %d, "v": "' + b"x" * 300_000 + b'"}'),  # past ingest's limit
        (f"/api/v1/{token}/telemetry", {}, b'{"ts": %d, "values": {"tb": 1}}'),
        ("/api/v1/fcd_not_a_token/telemetry", {}, b'{"ts": %d, "values": {"tb": 1}}'),
    ]
    for n, (path, headers, template) in enumerate(cases):
        answers = []
        for way, extra in enumerate(({}, GENERAL)):
            body = template % (now - 1000 * (2 * n + way)) if b"%d" in template else template
            response = await live_client.post(
                path, headers={**headers, **extra, "Content-Type": "application/json"}, content=body
            )
            assert response.status_code < 500, response.text
            answers.append(_shape(response))
        assert answers[0] == answers[1], (path, headers, answers)
        status, _, names = answers[0]
        assert SECURITY | {"x-request-id"} <= names, (status, names)
    assert set(_lane_of(live_app).fixed) == {PATH}


async def test_request_id_metrics_and_the_access_line(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    _, token = await new_device(live_client, live_tenant)
    before = _requests(PATH, 200), _requests(TB_ROUTE, 200), _requests(PATH, 401)
    with structlog.testing.capture_logs() as logs:
        given = await live_client.post(
            PATH, headers={"X-Device-Token": token, "X-Request-ID": "probe-1"}, json={"t": 1}
        )
        fresh = await live_client.post(f"/api/v1/{token}/telemetry", json={"t": 2})
        refused = await live_client.post(PATH, headers={"X-Device-Token": "fcd_x"}, json={"t": 3})
    assert given.status_code == fresh.status_code == 200
    assert given.headers["x-request-id"] == "probe-1"
    assert len(fresh.headers["x-request-id"]) == 32  # generated
    assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]
    after = _requests(PATH, 200), _requests(TB_ROUTE, 200), _requests(PATH, 401)
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
    _lane_of(live_app)
    lines = [entry for entry in logs if entry.get("event") == "request"]
    assert [(line["route"], line["status"]) for line in lines] == [
        (PATH, 200),
        (TB_ROUTE, 200),
        (PATH, 401),
    ]
    assert lines[1]["path"] == "/api/v1/***/telemetry"  # the token never reaches the log
    assert token not in repr(logs)


async def test_usage_is_metered_and_quotas_refuse(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    superuser = await make_superuser(live_client, live_database)
    await put_on_plan(live_client, superuser, live_tenant, max_readings_per_day=3)
    _, token = await new_device(live_client, live_tenant)
    auth = {"X-Device-Token": token}
    meter = live_app.state.usage_meter
    stored = await live_client.post(PATH, headers=auth, json={"a": 1, "b": 2, "c": 3})
    assert (stored.status_code, stored.json()["stored"]) == (200, 3), stored.text
    assert meter.today(live_tenant.org_id, UsageKind.READINGS) == 3
    assert meter.today(live_tenant.org_id, UsageKind.DEVICES_ACTIVE) == 1
    over = await live_client.post(PATH, headers=auth, json={"d": 4})
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "QUOTA_EXCEEDED"
    assert over.headers["retry-after"]
    assert set(over.headers) >= SECURITY
    _lane_of(live_app)


async def test_production_answers_carry_hsts(live_database: Database, tmp_path: Path) -> None:
    async with (
        running_app(live_database, tmp_path, environment="production") as app,
        client_for(app) as http,
    ):
        tenant = await make_tenant(http, live_database)
        _, token = await new_device(http, tenant)
        answer = await http.post(PATH, headers={"X-Device-Token": token}, json={"t": 1})
        assert answer.status_code == 200, answer.text
        assert "max-age=" in answer.headers["strict-transport-security"]
        _lane_of(app)


async def test_the_lane_passes_on_what_it_does_not_serve(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    _, token = await new_device(live_client, live_tenant)
    lane = _lane_of(live_app)
    scope = {"type": "http", "method": "POST", "path": PATH, "headers": []}
    assert lane._route(scope) is not None
    for other in (
        {**scope, "method": "GET"},
        {**scope, "path": "/api/v1/devices/telemetry"},  # a collection's segment: not a token
        {**scope, "path": f"/api/v1/{token}/attributes"},
        {**scope, "root_path": "/behind-a-proxy"},
    ):
        assert lane._route(other) is None, other
    assert lane._plain({**scope, "headers": [(b"content-length", b"10")]})
    for headers in (
        [],  # chunked: no length
        [(b"content-length", b"10"), (b"origin", b"http://x.example")],
        [(b"content-length", str(live_app.state.settings.max_body_bytes + 1).encode())],
    ):
        assert not lane._plain({**scope, "headers": headers}), headers
    # A chunked body (no Content-Length) is served the general way, with the same answer.

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"chunked": '
        yield b"1}"

    chunked = await live_client.post(
        PATH,
        headers={"X-Device-Token": token, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert (chunked.status_code, chunked.json()["stored"]) == (200, 1), chunked.text
    assert SECURITY | {"x-request-id"} <= set(chunked.headers)
