"""Roles, organizations and users, API keys, the audit log, cookie sessions and CSRF."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fleetcore.auth.principal import Role
from tests.support.tenants import PASSWORD, Tenant, login


async def test_superuser_creates_organizations_and_users_anywhere(
    client: httpx.AsyncClient, superuser: dict[str, str], tenant: Tenant
) -> None:
    created = await client.post(
        "/api/v1/organizations", headers=superuser, json={"name": "Acme", "slug": "acme-corp"}
    )
    assert created.status_code == 201
    org_id = created.json()["id"]
    duplicate = await client.post(
        "/api/v1/organizations", headers=superuser, json={"name": "Acme 2", "slug": "acme-corp"}
    )
    assert duplicate.status_code == 409
    bad_slug = await client.post(
        "/api/v1/organizations", headers=superuser, json={"name": "X", "slug": "Not A Slug"}
    )
    assert bad_slug.status_code == 422
    user = await client.post(
        "/api/v1/users",
        headers=superuser,
        json={
            "email": "boss@acme.example.com",
            "password": PASSWORD,
            "role": "admin",
            "organization_id": org_id,
        },
    )
    assert user.status_code == 201
    assert user.json()["organization_id"] == org_id
    orgs = await client.get("/api/v1/organizations", headers=superuser)
    assert {o["slug"] for o in orgs.json()} >= {"acme-corp", tenant.slug}


async def test_only_superusers_create_organizations(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post(
        "/api/v1/organizations", headers=tenant.headers(Role.ADMIN), json={"name": "N", "slug": "n"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    own = await client.get("/api/v1/organizations", headers=tenant.headers(Role.ADMIN))
    assert [o["slug"] for o in own.json()] == [tenant.slug]


async def test_admin_creates_users_only_in_own_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = await client.post(
        "/api/v1/users",
        headers=tenant.headers(Role.ADMIN),
        json={"email": "new@a.example.com", "password": PASSWORD, "role": "operator"},
    )
    assert mine.status_code == 201
    assert mine.json()["organization_id"] == str(tenant.org_id)
    foreign = await client.post(
        "/api/v1/users",
        headers=tenant.headers(Role.ADMIN),
        json={
            "email": "spy@b.example.com",
            "password": PASSWORD,
            "role": "admin",
            "organization_id": str(other_tenant.org_id),
        },
    )
    assert foreign.status_code == 403
    taken = await client.post(
        "/api/v1/users",
        headers=tenant.headers(Role.ADMIN),
        json={"email": "NEW@a.example.com", "password": PASSWORD, "role": "viewer"},
    )
    assert taken.status_code == 409


@pytest.mark.parametrize("role", [Role.MANAGER, Role.OPERATOR, Role.VIEWER])
async def test_non_admins_cannot_manage_users_or_keys(
    client: httpx.AsyncClient, tenant: Tenant, role: Role
) -> None:
    headers = tenant.headers(role)
    attempts = [
        await client.get("/api/v1/users", headers=headers),
        await client.post(
            "/api/v1/users",
            headers=headers,
            json={"email": f"x-{role}@a.example.com", "password": PASSWORD},
        ),
        await client.patch(
            f"/api/v1/users/{tenant.user_ids[Role.ADMIN]}", headers=headers, json={"role": "viewer"}
        ),
        await client.post("/api/v1/api-keys", headers=headers, json={"name": "k"}),
        await client.get("/api/v1/audit", headers=headers),
    ]
    assert [r.status_code for r in attempts] == [403] * 5
    users = await client.get("/api/v1/users", headers=tenant.headers(Role.ADMIN))
    assert {u["email"] for u in users.json()["items"]} == set(tenant.emails.values())


async def test_role_change_takes_effect_immediately(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    viewer = tenant.user_ids[Role.VIEWER]
    await client.patch(
        f"/api/v1/users/{viewer}", headers=tenant.headers(Role.ADMIN), json={"role": "admin"}
    )
    promoted = await client.get("/api/v1/users", headers=tenant.headers(Role.VIEWER))
    assert promoted.status_code == 200


async def test_users_list_paginates(client: httpx.AsyncClient, tenant: Tenant) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/users", headers=tenant.headers(), params=params)).json()
        seen += [u["email"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(tenant.emails.values())
    bad = await client.get("/api/v1/users", headers=tenant.headers(), params={"cursor": "!!"})
    assert bad.status_code == 422


async def test_api_key_lifecycle(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await client.post(
        "/api/v1/api-keys", headers=tenant.headers(), json={"name": "erp", "role": "admin"}
    )
    assert created.status_code == 201
    key = created.json()["key"]
    key_id = created.json()["id"]
    assert key.startswith("fck_")
    assert len(key) > 40
    listed = await client.get("/api/v1/api-keys", headers=tenant.headers())
    assert key not in listed.text
    assert listed.json()[0]["last_used_at"] is None

    with_key = await client.get("/api/v1/users", headers={"X-API-Key": key})
    assert with_key.status_code == 200
    listed = await client.get("/api/v1/api-keys", headers=tenant.headers())
    assert listed.json()[0]["last_used_at"] is not None

    revoked = await client.delete(f"/api/v1/api-keys/{key_id}", headers=tenant.headers())
    assert revoked.status_code == 200
    after = await client.get("/api/v1/users", headers={"X-API-Key": key})
    assert after.status_code == 401
    assert after.json()["error"]["code"] == "INVALID_API_KEY"


async def test_api_key_role_and_expiry(client: httpx.AsyncClient, tenant: Tenant) -> None:
    viewer_key = (
        await client.post(
            "/api/v1/api-keys", headers=tenant.headers(), json={"name": "dash", "role": "viewer"}
        )
    ).json()["key"]
    denied = await client.post(
        "/api/v1/users",
        headers={"X-API-Key": viewer_key},
        json={"email": "k@a.example.com", "password": PASSWORD},
    )
    assert denied.status_code == 403
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    refused = await client.post(
        "/api/v1/api-keys", headers=tenant.headers(), json={"name": "old", "expires_at": past}
    )
    assert refused.status_code == 422
    assert (
        await client.get("/api/v1/users", headers={"X-API-Key": "fck_madeup"})
    ).status_code == 401


async def test_api_keys_are_org_scoped(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    key_id = (
        await client.post("/api/v1/api-keys", headers=tenant.headers(), json={"name": "a"})
    ).json()["id"]
    response = await client.delete(f"/api/v1/api-keys/{key_id}", headers=other_tenant.headers())
    assert response.status_code == 404
    assert (await client.get("/api/v1/api-keys", headers=other_tenant.headers())).json() == []


async def test_audit_log_records_sign_ins_changes_and_denials(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await client.post(
        "/api/v1/auth/login", json={"email": tenant.emails[Role.VIEWER], "password": "x" * 12}
    )
    await client.post(
        "/api/v1/auth/login", json={"email": tenant.emails[Role.VIEWER], "password": PASSWORD}
    )
    await client.post(
        "/api/v1/users",
        headers={**tenant.headers(Role.VIEWER), "X-Request-ID": "denied-1"},
        json={"email": "nope@a.example.com", "password": PASSWORD},
    )
    await client.post(
        "/api/v1/users",
        headers={**tenant.headers(), "X-Request-ID": "create-1"},
        json={"email": "audited@a.example.com", "password": PASSWORD},
    )
    events = (await client.get("/api/v1/audit", headers=tenant.headers())).json()["items"]
    by_action: dict[str, list[dict[str, object]]] = {}
    for event in events:
        by_action.setdefault(str(event["action"]), []).append(event)
    assert any(e["outcome"] == "failure" for e in by_action["auth.login"])
    assert any(e["outcome"] == "success" for e in by_action["auth.login"])
    denial = by_action["permission.denied"][0]
    assert denial["request_id"] == "denied-1"
    assert denial["actor_id"] == str(tenant.user_ids[Role.VIEWER])
    created = next(e for e in by_action["user.create"] if e["request_id"] == "create-1")
    assert created["actor_id"] == str(tenant.user_ids[Role.ADMIN])
    assert created["client_address"]
    assert PASSWORD not in str(events)
    only_failures = await client.get(
        "/api/v1/audit",
        headers=tenant.headers(),
        params={"action": "auth.login", "outcome": "failure"},
    )
    assert {e["outcome"] for e in only_failures.json()["items"]} == {"failure"}
    # A time without an offset is UTC, not a 500.
    naive = await client.get(
        "/api/v1/audit", headers=tenant.headers(), params={"since": "2000-01-01T00:00:00"}
    )
    assert naive.status_code == 200
    assert len(naive.json()["items"]) == len(events)
    theirs = (await client.get("/api/v1/audit", headers=other_tenant.headers())).json()["items"]
    assert all(e["organization_id"] == str(other_tenant.org_id) for e in theirs)


async def _browser_login(
    client: httpx.AsyncClient, email: str, *, remember: bool = False
) -> httpx.Response:
    form = await client.get("/auth/login")
    assert form.status_code == 200
    assert 'name="email"' in form.text
    assert 'name="password"' in form.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    data = {"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    if remember:
        data["remember_me"] = "1"
    return await client.post("/auth/login", data=data)


def _session_cookie(response: httpx.Response) -> str:
    cookies = [
        c for c in response.headers.get_list("set-cookie") if c.startswith("fleetcore_session=")
    ]
    assert len(cookies) == 1
    return cookies[0]


async def test_browser_login_sets_http_only_cookie(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await _browser_login(client, tenant.emails[Role.OPERATOR])
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = _session_cookie(response)
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Max-Age" not in cookie  # a session cookie unless "remember me"
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert tenant.emails[Role.OPERATOR] in page.text
    # The same API accepts the cookie.
    me = await client.get("/api/v1/auth/me")
    assert me.json()["email"] == tenant.emails[Role.OPERATOR]


async def test_remember_me_persists_cookie(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await _browser_login(client, tenant.emails[Role.VIEWER], remember=True)
    assert "Max-Age=2592000" in _session_cookie(response)


async def test_login_form_needs_its_csrf_token(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await client.get("/auth/login")
    response = await client.post(
        "/auth/login",
        data={"email": tenant.emails[Role.ADMIN], "password": PASSWORD, "csrf_token": "forged"},
    )
    assert response.status_code == 403
    assert "fleetcore_session" not in response.headers.get("set-cookie", "")


async def test_login_form_wrong_password_rerenders(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    form = await client.get("/auth/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    response = await client.post(
        "/auth/login",
        data={
            "email": tenant.emails[Role.ADMIN],
            "password": "wrong" * 3,
            "csrf_token": token.group(1),
        },
    )
    assert response.status_code == 401
    assert "email or password is wrong" in response.text


async def test_cookie_writes_need_csrf_header(client: httpx.AsyncClient, tenant: Tenant) -> None:
    await _browser_login(client, tenant.emails[Role.ADMIN])
    body = {"email": "csrf@a.example.com", "password": PASSWORD}
    refused = await client.post("/api/v1/users", json=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "CSRF_FAILED"
    page = await client.get("/dashboard")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    accepted = await client.post(
        "/api/v1/users", json=body, headers={"X-CSRF-Token": token.group(1)}
    )
    assert accepted.status_code == 201


async def test_browser_logout_revokes_the_session(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await _browser_login(client, tenant.emails[Role.MANAGER])
    stolen = client.cookies.get("fleetcore_session")
    page = await client.get("/dashboard")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    out = await client.post("/auth/logout", data={"csrf_token": token.group(1)})
    assert out.status_code == 303
    assert (await client.get("/dashboard")).status_code == 303
    # A copy of the old cookie no longer works either.
    client.cookies.set("fleetcore_session", str(stolen))
    replay = await client.get("/api/v1/auth/me")
    assert replay.status_code == 401


async def test_pages_redirect_to_login(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 303
    assert response.headers["location"] == "/auth/login?next=/dashboard"


async def test_login_next_cannot_leave_the_site(client: httpx.AsyncClient, tenant: Tenant) -> None:
    form = await client.get("/auth/login", params={"next": "//evil.example.com/"})
    assert 'name="next" value="/dashboard"' in form.text


async def test_me_with_unknown_user_id_token(client: httpx.AsyncClient) -> None:
    from fleetcore.auth.security import issue_access_token
    from tests.conftest import TEST_SECRET

    token, _ = issue_access_token(
        TEST_SECRET, user_id=uuid.uuid4(), session_id=uuid.uuid4(), ttl=timedelta(minutes=5)
    )
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_login_helper(client: httpx.AsyncClient, tenant: Tenant) -> None:
    assert (await login(client, tenant.emails[Role.VIEWER]))["token_type"] == "bearer"
