"""Issue 14's review findings on sign-in and sessions, each as the attack that was tried."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import jwt

from fleetcore.auth.principal import Role
from fleetcore.auth.security import AUDIENCE, issue_access_token
from tests.conftest import TEST_SECRET
from tests.support.tenants import Tenant


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
