"""Issue 14's review findings on sign-in and sessions, each as the attack that was tried."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import jwt
import orjson
import structlog
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.auth.security import AUDIENCE, issue_access_token
from fleetcore.db import Database
from tests.conftest import TEST_SECRET, client_for, running_app
from tests.support.devices import new_device
from tests.support.serving import serving
from tests.support.tenants import PASSWORD, Tenant, make_tenant


def _session_of(token: str) -> uuid.UUID:
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    return uuid.UUID(claims["sid"])


async def test_a_viewers_session_does_not_carry_an_admins_id(
    client: httpx.AsyncClient, tenant: Tenant, superuser: dict[str, str]
) -> None:
    """Finding 2: with the key, a viewer re-signed its token with sub = the admin's id."""
    viewer_session = _session_of(tenant.tokens[Role.VIEWER])
    for victim in (tenant.user_ids[Role.ADMIN], _subject(superuser)):
        forged, _ = issue_access_token(
            TEST_SECRET, user_id=victim, session_id=viewer_session, ttl=timedelta(minutes=5)
        )
        headers = {"Authorization": f"Bearer {forged}"}
        created = await client.post(
            "/api/v1/api-keys", headers=headers, json={"name": "stolen", "role": "admin"}
        )
        assert created.status_code == 401, created.text
        assert created.json()["error"]["code"] == "SESSION_REVOKED"
        organizations = await client.get("/api/v1/organizations", headers=headers)
        assert organizations.status_code == 401
    # The viewer's own token still works: the check binds, it does not break.
    me = await client.get("/api/v1/auth/me", headers=tenant.headers(Role.VIEWER))
    assert me.status_code == 200


def _subject(headers: dict[str, str]) -> uuid.UUID:
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    return uuid.UUID(claims["sub"])


async def test_bodies_past_the_limit_are_refused_before_they_are_read(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Finding 5: a 300 MB login body was read whole and parsed before a 422."""
    big = b'{"email": "a@b.example.com", "password": "' + b"x" * (1024 * 1024 + 1) + b'"}'
    for path in ("/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/provision"):
        response = await client.post(
            path, content=big, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413, (path, response.text)
        assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert response.json()["error"]["details"] == {"max_bytes": 1024 * 1024}

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off as it arrives
        for _ in range(3):
            yield b" " * (512 * 1024)

    response = await client.post(
        "/api/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    # Under the limit, the route answers as before.
    ok = await client.post("/api/v1/auth/login", json={"email": "x@y.example.com", "password": "p"})
    assert ok.status_code in (401, 422)


async def test_a_route_with_its_own_limit_keeps_it(client: httpx.AsyncClient) -> None:
    """Events take up to 2 MiB: past the default, but not refused for size."""
    events = [{"type": "blob", "data": {"x": "y" * 15_000}} for _ in range(100)]
    body = orjson.dumps(events)
    assert 1024 * 1024 < len(body) < 2 * 1024 * 1024
    response = await client.post(
        "/api/v1/devices/me/events",
        content=body,
        headers={"Content-Type": "application/json", "X-Device-Token": "not-a-token"},
    )
    assert response.status_code == 401  # the device check answered, not the body limit


async def test_declared_huge_body_is_refused_without_being_sent(
    app: FastAPI, tenant: Tenant
) -> None:
    """A real socket: the client declares 300 MB and sends none of it; 413 comes at once."""
    async with serving(app) as address:
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\n"
                b"Content-Type: application/json\r\nContent-Length: 300000000\r\n\r\n{"
            )
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            assert head.startswith(b"HTTP/1.1 413"), head
        finally:
            writer.close()
            await writer.wait_closed()


async def test_stored_command_results_have_a_size_limit(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    device = {"X-Device-Token": token}
    created = await client.post(
        f"/api/v1/devices/{device_id}/commands",
        headers=tenant.headers(Role.OPERATOR),
        json={"method": "dump", "persistent": True},
    )
    assert created.status_code == 201, created.text
    polled = await client.get("/api/v1/devices/me/commands", params={"timeout": 0}, headers=device)
    assert [c["id"] for c in polled.json()["commands"]] == [created.json()["id"]]
    result_url = f"/api/v1/devices/me/commands/{created.json()['id']}/result"
    huge = await client.post(
        result_url, headers=device, json={"status": "succeeded", "result": "r" * 70_000}
    )
    assert huge.status_code == 413, huge.text
    assert huge.json()["error"]["code"] == "RESULT_TOO_LARGE"
    command = await client.get(
        f"/api/v1/devices/{device_id}/commands/{created.json()['id']}", headers=tenant.headers()
    )
    assert command.json()["status"] == "delivered"  # the refused result changed nothing
    # 300 levels: json reads it, orjson (254 levels at most) cannot write it: this was a 500.
    nested = await client.post(
        result_url,
        headers={**device, "Content-Type": "application/json"},
        content=b'{"status": "succeeded", "result": ' + b"[" * 300 + b"1" + b"]" * 300 + b"}",
    )
    assert nested.status_code == 422, nested.text
    assert nested.json()["error"]["code"] == "RESULT_NOT_STORABLE"
    fine = await client.post(result_url, headers=device, json={"status": "succeeded", "result": 1})
    assert fine.status_code == 200, fine.text


async def test_device_tokens_never_reach_the_logs(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    """Finding 6: the access log wrote /api/v1/{token}/... paths as they came."""
    _device_id, token = await new_device(client, tenant)
    forged = "my-own-thingsboard-token-0123"  # provisioned devices may choose their token
    with structlog.testing.capture_logs() as logs:
        polled = await client.get(f"/api/v1/{token}/rpc", params={"timeout": 0})
        assert polled.status_code == 408, polled.text  # matched and authenticated
        await client.get(f"/api/v1/{token}/attributes", params={"sharedKeys": "a"})
        missing = await client.post(f"/api/v1/{token}/telemetryy", json={"t": 1})  # no route
        assert missing.status_code in (404, 405)
        await client.post(f"/api/v1/{forged}/telemetry", json={"t": 1})
        await client.get(f"/api/v1/{forged}")
        await client.get("/api/v1/devices")  # a collection of ours stays readable
    lines = [entry for entry in logs if entry.get("event") == "request"]
    assert len(lines) == 6
    text = repr(logs)
    assert token not in text
    assert token[4:] not in text
    assert forged not in text
    assert {entry["path"] for entry in lines} >= {
        "/api/v1/***/rpc",
        "/api/v1/***/telemetry",
        "/api/v1/***/telemetryy",
        "/api/v1/***",
        "/api/v1/devices",
    }


def _client_at(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_concurrent_guesses_are_counted_before_the_password_check(
    live_database: Database, tmp_path: Path
) -> None:
    """Finding 7: 60 concurrent wrong passwords were all checked, then the owner was locked
    out for 15 minutes from any address."""
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        tenant = await make_tenant(http, live_database)
        email = tenant.emails[Role.VIEWER]
        async with _client_at(app, "203.0.113.50") as attacker:
            answers = await asyncio.gather(
                *(
                    attacker.post("/api/v1/auth/login", json={"email": email, "password": "w" * 12})
                    for _ in range(60)
                )
            )
        statuses = sorted(response.status_code for response in answers)
        assert statuses == [401] * 10 + [429] * 50
        async with _client_at(app, "198.51.100.7") as owner:
            response = await owner.post(
                "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
            )
        assert response.status_code == 200, response.text


async def test_a_distributed_guesser_is_slowed_and_the_owner_waits_a_minute_at_most(
    app: FastAPI, tenant: Tenant
) -> None:
    email = tenant.emails[Role.OPERATOR]
    for i in range(30):
        async with _client_at(app, f"203.0.113.{i + 1}") as attacker:
            response = await attacker.post(
                "/api/v1/auth/login", json={"email": email, "password": "w" * 12}
            )
            assert response.status_code == 401
    async with _client_at(app, "192.0.2.200") as owner:
        refused = await owner.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
