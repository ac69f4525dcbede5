"""Sign-in, sessions, refresh rotation with reuse detection, rate limits, passwords."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from fleetcore.app import create_app
from fleetcore.auth.principal import Role
from fleetcore.auth.security import AUDIENCE, ISSUER, issue_access_token
from fleetcore.db import Database
from tests.conftest import TEST_SECRET, make_settings
from tests.support.tenants import PASSWORD, Tenant, login


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


async def test_login_returns_short_lived_jwt(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = await login(client, tenant.emails[Role.ADMIN].upper())  # emails are case-insensitive
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = jwt.decode(body["access_token"], TEST_SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(tenant.user_ids[Role.ADMIN])
    assert claims["exp"] - claims["iat"] == 900
    assert body["refresh_token"] != body["access_token"]


async def test_bad_password_and_unknown_account_answer_alike(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": tenant.emails[Role.ADMIN], "password": "nope" * 4}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@nowhere.example.com", "password": "nope" * 4}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "BAD_CREDENTIALS"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_account_locked_after_ten_failures(client: httpx.AsyncClient, tenant: Tenant) -> None:
    email = tenant.emails[Role.VIEWER]
    for _ in range(10):
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "x" * 12}
        )
        assert response.status_code == 401
    blocked = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "LOGIN_RATE_LIMITED"
    assert 0 < int(blocked.headers["retry-after"]) <= 15 * 60
    # Other accounts are not affected by this account's lock.
    assert (await login(client, tenant.emails[Role.ADMIN]))["access_token"]


async def test_client_address_limited_across_accounts(db: Database, tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, login_max_failures_per_address=3), database=db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for i in range(3):
                response = await http.post(
                    "/api/v1/auth/login",
                    json={"email": f"user{i}@spray.example.com", "password": "x" * 12},
                )
                assert response.status_code == 401
            blocked = await http.post(
                "/api/v1/auth/login",
                json={"email": "fresh@spray.example.com", "password": "x" * 12},
            )
            assert blocked.status_code == 429
            assert "retry-after" in blocked.headers


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    first = await login(client, tenant.emails[Role.OPERATOR])
    rotated = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert rotated.status_code == 200
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await _me(client, second["access_token"])).status_code == 200

    reused = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "REFRESH_TOKEN_REUSED"
    # The whole family is dead: the rotated refresh token and every access token of the session.
    later = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert later.status_code == 401
    for token in (first["access_token"], second["access_token"]):
        response = await _me(client, token)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "SESSION_REVOKED"
    # Another session of the same user is untouched.
    other = await login(client, tenant.emails[Role.OPERATOR])
    assert (await _me(client, other["access_token"])).status_code == 200


async def test_garbage_refresh_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": "fcr_nonsense"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_REFRESH_TOKEN"


async def test_logout_ends_access_and_refresh(client: httpx.AsyncClient, tenant: Tenant) -> None:
    tokens = await login(client, tenant.emails[Role.MANAGER])
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    response = await client.post(
        "/api/v1/auth/logout", headers=headers, json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 204
    assert (await _me(client, tokens["access_token"])).status_code == 401
    refreshed = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refreshed.status_code == 401


@pytest.mark.parametrize("problem", ["expired", "audience", "issuer", "signature", "none_alg"])
async def test_bad_access_tokens_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, problem: str
) -> None:
    session_id = uuid.uuid4()
    now = datetime.now(UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(tenant.user_ids[Role.ADMIN]),
        "sid": str(session_id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "typ": "access",
    }
    key, alg = TEST_SECRET, "HS256"
    if problem == "expired":
        token, _ = issue_access_token(
            TEST_SECRET,
            user_id=tenant.user_ids[Role.ADMIN],
            session_id=session_id,
            ttl=timedelta(seconds=-60),
        )
    else:
        if problem == "audience":
            claims["aud"] = "someone-else"
        elif problem == "issuer":
            claims["iss"] = "evil"
        elif problem == "signature":
            key = "another-secret-of-sufficient-length-0123456789"
        token = jwt.encode(claims, key, algorithm=alg)
        if problem == "none_alg":
            _header, payload, _sig = token.split(".")
            token = f"eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."
    response = await _me(client, token)
    assert response.status_code == 401
    expected = "TOKEN_EXPIRED" if problem == "expired" else "INVALID_TOKEN"
    assert response.json()["error"]["code"] == expected


async def test_short_password_refused_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/api/v1/users",
        headers=tenant.headers(Role.ADMIN),
        json={"email": "short@x.example.com", "password": "elevenchars", "role": "viewer"},
    )
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["error"]["details"]["errors"]]
    assert fields == ["body.password"]


async def test_change_password(client: httpx.AsyncClient, tenant: Tenant) -> None:
    email = tenant.emails[Role.OPERATOR]
    current = await login(client, email)
    elsewhere = await login(client, email)
    headers = {"Authorization": f"Bearer {current['access_token']}"}
    wrong = await client.post(
        "/api/v1/auth/change-password",
        headers=headers,
        json={"current_password": "not it at all", "new_password": "a brand new passphrase"},
    )
    assert wrong.status_code == 401
    ok = await client.post(
        "/api/v1/auth/change-password",
        headers=headers,
        json={"current_password": PASSWORD, "new_password": "a brand new passphrase"},
    )
    assert ok.status_code == 204
    assert (await _me(client, current["access_token"])).status_code == 200
    assert (await _me(client, elsewhere["access_token"])).status_code == 401
    old = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    assert (await login(client, email, "a brand new passphrase"))["access_token"]


async def test_deactivated_user_is_refused_at_once(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    victim = tenant.user_ids[Role.VIEWER]
    response = await client.patch(
        f"/api/v1/users/{victim}", headers=tenant.headers(Role.ADMIN), json={"is_active": False}
    )
    assert response.status_code == 200
    assert response.json()["is_active"] is False
    assert (await _me(client, tenant.tokens[Role.VIEWER])).status_code == 401
    again = await client.post(
        "/api/v1/auth/login", json={"email": tenant.emails[Role.VIEWER], "password": PASSWORD}
    )
    assert again.status_code == 401


async def test_admin_cannot_demote_self(client: httpx.AsyncClient, tenant: Tenant) -> None:
    me = tenant.user_ids[Role.ADMIN]
    response = await client.patch(
        f"/api/v1/users/{me}", headers=tenant.headers(Role.ADMIN), json={"role": "viewer"}
    )
    assert response.status_code == 403
    assert (await _me(client, tenant.tokens[Role.ADMIN])).json()["role"] == "admin"
