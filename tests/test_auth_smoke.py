"""Sign-in through the API works and the principal reaches the services."""

from __future__ import annotations

import httpx

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant


async def test_me_for_each_role(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for role in Role:
        response = await client.get("/api/v1/auth/me", headers=tenant.headers(role))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["role"] == role.value
        assert body["organization"]["slug"] == tenant.slug


async def test_no_credentials_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "NOT_AUTHENTICATED"
