"""API rate limits per API key, per user and per organization (fleetcore.auth.api_limits):
429 with the envelope naming the limit, the RateLimit headers and Retry-After; one caller's
exhaustion leaves another user and another organization alone; device routes and /health are
never limited; with the defaults (0) nothing is limited and no RateLimit header is sent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.redis import RedisServer
from tests.support.tenants import Tenant, make_tenant

LIST = "/api/v1/devices"
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@asynccontextmanager
async def limited(db: Database, tmp_path: Path, **limits: int) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app with these API rate limits (per minute)."""
    async with running_app(db, tmp_path, **limits) as app, client_for(app) as http:
        yield http


def assert_refused(response: httpx.Response, limit: str, amount: int) -> None:
    """A 429 in the envelope naming `limit`, with the RateLimit headers and Retry-After."""
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["details"] == {"limit": limit, "per": "minute"}
    assert response.headers["RateLimit-Limit"] == str(amount)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
    assert 1 <= int(response.headers["Retry-After"]) <= 60


async def exhaust(http: httpx.AsyncClient, headers: dict[str, str], amount: int) -> None:
    """Spend `amount` requests, each answered with the headers counting down."""
    for spent in range(1, amount + 1):
        response = await http.get(LIST, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["RateLimit-Limit"] == str(amount)
        assert response.headers["RateLimit-Remaining"] == str(amount - spent)
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60


async def new_api_key(http: httpx.AsyncClient, tenant: Tenant) -> dict[str, str]:
    created = await http.post(
        "/api/v1/api-keys", headers=tenant.headers(), json={"name": "erp", "role": "admin"}
    )
    assert created.status_code == 201, created.text
    return {"X-API-Key": created.json()["key"]}


async def test_per_user_limit_refuses_that_user_only(db: Database, tmp_path: Path) -> None:
    async with limited(db, tmp_path, api_rate_limit_per_user=3) as http:
        tenant = await make_tenant(http, db)
        other = await make_tenant(http, db)
        await exhaust(http, tenant.headers(), 3)
        assert_refused(await http.get(LIST, headers=tenant.headers()), "user", 3)
        # A colleague in the same organization and a user of another keep their own window.
        assert (await http.get(LIST, headers=tenant.headers(Role.VIEWER))).status_code == 200
        assert (await http.get(LIST, headers=other.headers())).status_code == 200


async def test_per_api_key_limit(db: Database, tmp_path: Path) -> None:
    async with limited(db, tmp_path, api_rate_limit_per_api_key=2) as http:
        tenant = await make_tenant(http, db)
        key, other_key = await new_api_key(http, tenant), await new_api_key(http, tenant)
        await exhaust(http, key, 2)
        assert_refused(await http.get(LIST, headers=key), "api_key", 2)
        assert (await http.get(LIST, headers=other_key)).status_code == 200
        # Users are not under the API key limit.
        ok = await http.get(LIST, headers=tenant.headers())
        assert ok.status_code == 200
        assert "RateLimit-Limit" not in ok.headers


async def test_per_organization_limit_isolates_organizations(db: Database, tmp_path: Path) -> None:
    async with limited(db, tmp_path, api_rate_limit_per_organization=4) as http:
        tenant = await make_tenant(http, db)
        other = await make_tenant(http, db)
        key = await new_api_key(http, tenant)  # the organization's 1st request
        assert (await http.get(LIST, headers=key)).status_code == 200  # 2nd, by its key
        for role in (Role.VIEWER, Role.OPERATOR):  # 3rd and 4th, by two of its users
            response = await http.get(LIST, headers=tenant.headers(role))
            assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "0"
        for headers in (tenant.headers(Role.MANAGER), key):
            assert_refused(await http.get(LIST, headers=headers), "organization", 4)
        # Another organization is untouched by this one's exhaustion.
        await exhaust(http, other.headers(), 4)


async def test_tightest_limit_counts_and_every_answer_carries_it(
    db: Database, tmp_path: Path
) -> None:
    async with limited(
        db, tmp_path, api_rate_limit_per_user=6, api_rate_limit_per_organization=50
    ) as http:
        tenant = await make_tenant(http, db)
        created = await http.post(
            LIST, headers=tenant.headers(), json={"name": "pump-1", "serial_number": "P-1"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["RateLimit-Limit"] == "6"  # the user's, tighter than 50
        assert created.headers["RateLimit-Remaining"] == "5"
        answers = [
            # A route that builds its own Response (the readings page)...
            await http.get(f"{LIST}/{created.json()['id']}/telemetry", headers=tenant.headers()),
            # ...a domain error, a validation error: each counted, each with the headers.
            await http.get(f"{LIST}/{uuid.uuid4()}", headers=tenant.headers()),
            await http.post(LIST, headers=tenant.headers(), json={"name": "no serial"}),
        ]
        assert [answer.status_code for answer in answers] == [200, 404, 422]
        remaining = [answer.headers["RateLimit-Remaining"] for answer in answers]
        assert remaining == ["4", "3", "2"]
        for _ in range(2):
            assert (await http.get(LIST, headers=tenant.headers())).status_code == 200
        assert_refused(await http.get(LIST, headers=tenant.headers()), "user", 6)


async def test_device_routes_and_health_are_never_limited(
    live_database: Database, tmp_path: Path
) -> None:
    # Live: ingest commits through the pipeline's own connections.
    async with limited(
        live_database, tmp_path, api_rate_limit_per_user=2, api_rate_limit_per_organization=2
    ) as http:
        tenant = await make_tenant(http, live_database)
        created = await http.post(
            LIST, headers=tenant.headers(), json={"name": "pump-1", "serial_number": "P-1"}
        )
        assert created.status_code == 201, created.text
        device = {"X-Device-Token": created.json()["access_token"]}
        token = created.json()["access_token"]
        assert (await http.get(LIST, headers=tenant.headers())).status_code == 200
        assert (await http.get(LIST, headers=tenant.headers())).status_code == 429
        for i in range(5):
            sent = await http.post(
                "/api/v1/devices/me/telemetry", headers=device, json={"temp": 20 + i}
            )
            assert sent.status_code == 200, sent.text
            me = await http.get("/api/v1/devices/me", headers=device)
            thingsboard = await http.post(f"/api/v1/{token}/telemetry", json={"temp": i})
            health = await http.get("/health")
            for answer in (sent, me, thingsboard, health):
                assert answer.status_code == 200, answer.text
                assert not any(name in answer.headers for name in LIMIT_HEADERS)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.VIEWER])
async def test_defaults_limit_nothing(
    client: httpx.AsyncClient, tenant: Tenant, role: Role
) -> None:
    key = await new_api_key(client, tenant)
    for _ in range(70):  # past any per-minute figure a test would set
        for headers in (tenant.headers(role), key):
            response = await client.get(LIST, headers=headers)
            assert response.status_code == 200
            assert not any(name in response.headers for name in LIMIT_HEADERS)


async def test_limits_are_shared_through_redis(live_database: Database, tmp_path: Path) -> None:
    # Two apps (two processes' worth of limiters) on one Redis count one window.
    redis = RedisServer()
    redis.start()
    try:
        limits = {"redis_url": redis.url, "api_rate_limit_per_organization": 4}
        async with (
            running_app(live_database, tmp_path / "one", **limits) as one,
            running_app(live_database, tmp_path / "two", **limits) as two,
            client_for(one) as http_one,
            client_for(two) as http_two,
        ):
            tenant = await make_tenant(http_one, live_database)
            for http in (http_one, http_two, http_one, http_two):
                assert (await http.get(LIST, headers=tenant.headers())).status_code == 200
            assert_refused(await http_two.get(LIST, headers=tenant.headers()), "organization", 4)
            assert_refused(await http_one.get(LIST, headers=tenant.headers()), "organization", 4)
    finally:
        redis.close()
