"""OWASP API sweep: authentication on every route, mass assignment, JWT confusion.

Walks the OpenAPI schema like the isolation sweep (tests/support/sweep.py), so a route added
later is covered: it must answer 401 without credentials unless it is in PUBLIC, reviewed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.auth.security import ALGORITHM, AUDIENCE, ISSUER
from tests.conftest import TEST_SECRET
from tests.support.sweep import NON_ID_PARAMS, create_objects, minimal_body
from tests.support.tenants import PASSWORD, Tenant

# Routes that answer without credentials on purpose, and why. Reviewed: add one only with a
# reason; every other route of the schema must answer 401 without credentials.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/health"): "liveness probe for load balancers: says only that the process answers",
    ("GET", "/ready"): "readiness probe: names the failing checks, nothing of any organization",
    ("GET", "/metrics"): "Prometheus scrape: counters without organization data",
    ("POST", "/api/v1/auth/login"): "the email and password in the body are the credentials",
    ("POST", "/api/v1/auth/refresh"): "the refresh token in the body is the credential",
    ("POST", "/api/v1/auth/register"): "sign-up: anyone, when open (rate limited, no enumeration)",
    ("POST", "/api/v1/auth/verify"): "the signed sign-up link's token is the credential",
    ("POST", "/api/v1/auth/password-reset"): "anyone may ask; the same answer for every address",
    ("POST", "/api/v1/auth/password-reset/confirm"): "the signed reset link is the credential",
    ("POST", "/api/v1/invitations/accept"): "the signed invitation link's token is the credential",
    ("POST", "/api/v1/auth/logout"): "ends the session of the refresh token in the body, if any",
    ("POST", "/api/v1/provision"): "device self-provisioning: the profile's key and secret",
}


def _concrete(path: str, token: str) -> str:
    """The path with a well-formed value in each parameter (`token`: the device route's)."""
    integer_ids = {
        "dead_letter_id": "1",
        "request_id": "1",
        "line_id": "1",
        "audit_id": "1",
        "read_id": "1",
    }
    values = {**NON_ID_PARAMS, **integer_ids, "token": token}
    for name in [part.strip("{}") for part in path.split("/") if part.startswith("{")]:
        path = path.replace("{" + name + "}", values.get(name, str(uuid.uuid4())))
    return path


def _is_device_route(path: str, operation: dict[str, Any]) -> bool:
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    return "{token}" in path or "DeviceToken" in schemes


def _assert_401_envelope(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text[:200]}"
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}, what
    assert error["request_id"] == response.headers["x-request-id"], what


async def test_every_route_without_credentials_is_401_unless_public(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    device = await client.post(
        "/api/v1/devices",
        headers=tenant.headers(Role.MANAGER),
        json={"name": "owasp", "serial_number": "OWASP-1"},
    )
    device_token = device.json()["access_token"]
    user_token = tenant.tokens[Role.ADMIN]
    seen_public: set[tuple[str, str]] = set()
    failures: list[str] = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            key = (method.upper(), path)
            if key in PUBLIC:
                seen_public.add(key)
                # Documented as public too: no credentials required, or optional ({}).
                security = operation.get("security")
                if security and {} not in security:
                    failures.append(f"{key}: public but documented as needing credentials")
                continue
            device_route = _is_device_route(path, operation)
            # Without credentials, with garbage, and with the other kind's real credential.
            if device_route:
                attempts = {
                    "none": ("not-a-device-token", {}),
                    "garbage": ("garbage", {"X-Device-Token": "garbage"}),
                    "user token as device token": (
                        user_token,
                        {"X-Device-Token": user_token, "Authorization": f"Bearer {user_token}"},
                    ),
                }
            else:
                attempts = {
                    "none": ("", {}),
                    "garbage": ("", {"Authorization": "Bearer garbage"}),
                    "device token as bearer": ("", {"Authorization": f"Bearer {device_token}"}),
                    "device token as API key": ("", {"X-API-Key": device_token}),
                }
            for name, (path_token, headers) in attempts.items():
                kwargs: dict[str, Any] = {"headers": headers}
                body = minimal_body(spec, operation)
                if body is not None:
                    kwargs[body[0]] = body[1]
                url = _concrete(path, path_token)
                response = await client.request(method.upper(), url, **kwargs)
                try:
                    _assert_401_envelope(response, f"{key} {name}")
                except AssertionError as failure:
                    failures.append(str(failure).splitlines()[0])
    assert not failures, "\n".join(failures)
    assert seen_public == set(PUBLIC), f"no longer in the schema: {set(PUBLIC) - seen_public}"


# -- mass assignment -----------------------------------------------------------------------

INJECTED_ID = "00000000-0000-4000-8000-00000000beef"
INJECTED_TIME = "2001-02-03T04:05:06Z"


def _injected(other: Tenant, *, role: bool = True) -> dict[str, Any]:
    """Fields a client must never set: ownership, identity, privilege, bookkeeping."""
    fields: dict[str, Any] = {
        "id": INJECTED_ID,
        "organization_id": str(other.org_id),
        "is_superuser": True,
        "created_at": INJECTED_TIME,
        "updated_at": INJECTED_TIME,
        "created_by": INJECTED_ID,
        "deleted_at": INJECTED_TIME,
    }
    if role:
        fields["role"] = "admin"
    return fields


@dataclass(frozen=True)
class Write:
    """A create or update, the role allowed to do it, and where its object is read back."""

    method: str
    path: str
    body: dict[str, Any]
    role: Role
    read_back: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


CONDITION = {"key": "t", "op": ">", "value": 1}
RELATION = {"from_type": "asset", "from_id": "{asset_id}", "to_type": "device"}
RETENTION = {"raw_days": 30, "rollup_1m_days": 90, "rollup_1h_days": 0}
WRITES = [
    Write("POST", "/api/v1/devices", {"name": "m", "serial_number": "MASS-1"}, Role.MANAGER,
          "/api/v1/devices/{id}"),
    Write("PATCH", "/api/v1/devices/{device_id}", {"name": "m2"}, Role.MANAGER,
          "/api/v1/devices/{device_id}"),
    Write("POST", "/api/v1/device-profiles", {"name": "mass"}, Role.MANAGER,
          "/api/v1/device-profiles/{id}"),
    Write("PATCH", "/api/v1/device-profiles/{profile_id}", {"description": "d"}, Role.MANAGER,
          "/api/v1/device-profiles/{profile_id}"),
    Write("POST", "/api/v1/assets", {"name": "mass", "type": "site"}, Role.MANAGER,
          "/api/v1/assets/{id}"),
    Write("PATCH", "/api/v1/assets/{asset_id}", {"name": "mass2"}, Role.MANAGER,
          "/api/v1/assets/{asset_id}"),
    Write("POST", "/api/v1/rules", {"name": "mass", "device_id": "{device_id}",
          "condition": CONDITION}, Role.MANAGER, "/api/v1/rules/{id}"),
    Write("PATCH", "/api/v1/rules/{rule_id}", {"severity": "minor"}, Role.MANAGER,
          "/api/v1/rules/{rule_id}"),
    Write("PATCH", "/api/v1/alerts/{alert_id}", {"assignee_id": None}, Role.OPERATOR,
          "/api/v1/alerts/{alert_id}"),
    Write("POST", "/api/v1/alerts/{alert_id}/comments", {"text": "mass"}, Role.OPERATOR),
    Write("POST", "/api/v1/notification-channels", {"name": "mass", "type": "in_app"},
          Role.ADMIN, "/api/v1/notification-channels/{id}"),
    Write("PATCH", "/api/v1/notification-channels/{channel_id}", {"enabled": False},
          Role.ADMIN, "/api/v1/notification-channels/{channel_id}"),
    Write("POST", "/api/v1/devices/{device_id}/commands", {"method": "m", "persistent": True},
          Role.OPERATOR, "/api/v1/devices/{device_id}/commands/{id}"),
    Write("POST", "/api/v1/relations", {**RELATION, "to_id": "{device_id}", "type": "mass"},
          Role.MANAGER),
    Write("PUT", "/api/v1/telemetry/retention", RETENTION, Role.ADMIN,
          "/api/v1/telemetry/retention"),
]  # fmt: skip


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        for name, value in ids.items():
            template = template.replace("{" + name + "}", value)
        return template
    if isinstance(template, dict):
        return {key: _fill(value, ids) for key, value in template.items()}
    return template


def _assert_not_assigned(body: Any, tenant: Tenant, what: str) -> None:
    """The object as stored: none of the injected values took."""
    if not isinstance(body, dict):
        return
    assert body.get("id") != INJECTED_ID, what
    if "organization_id" in body:
        assert body["organization_id"] == str(tenant.org_id), what
    for stamp in ("created_at", "updated_at"):
        assert not str(body.get(stamp, "")).startswith("2001-02-03"), what
    assert body.get("deleted_at") in (None, ...) or "deleted_at" not in body, what
    assert body.get("is_superuser") in (None, False), what
    assert body.get("created_by") != INJECTED_ID, what


@pytest.mark.parametrize("write", WRITES, ids=str)
async def test_mass_assignment_changes_nothing(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, write: Write
) -> None:
    ids = await create_objects(app, client, tenant)
    sent = {**_fill(write.body, ids), **_injected(other_tenant)}
    response = await client.request(
        write.method, _fill(write.path, ids), headers=tenant.headers(write.role), json=sent
    )
    what = f"{write}: {response.status_code} {response.text[:300]}"
    read_back = write.read_back
    if response.status_code == 422:
        # Refused because of the extra fields, not for another reason.
        kinds = {e["type"] for e in response.json()["error"]["details"].get("errors", [])}
        assert kinds == {"extra_forbidden"}, what
        return
    assert response.status_code in (200, 201), what
    created = response.json()
    _assert_not_assigned(created, tenant, what)
    if read_back is None:
        return
    object_id = str(created.get("id", "")) if isinstance(created, dict) else ""
    stored_url = _fill(read_back, {**ids, "id": object_id})
    stored = await client.get(stored_url, headers=tenant.headers(Role.ADMIN))
    assert stored.status_code == 200, f"{what}; read back: {stored.text[:200]}"
    _assert_not_assigned(stored.json(), tenant, what)
    intruder = await client.get(stored_url, headers=other_tenant.headers(Role.ADMIN))
    if "{" in read_back:
        assert intruder.status_code == 404, f"{what}; seen by the other organization"
    else:  # an organization's singleton (retention): the other keeps its own
        assert intruder.json() != stored.json() or intruder.json().get("is_default"), what


async def test_users_cannot_be_assigned_privilege_or_another_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.headers(Role.ADMIN)
    injected = _injected(other_tenant, role=False)
    # Into another organization: superusers only.
    response = await client.post(
        "/api/v1/users",
        headers=admin,
        json={"email": "mass1@example.com", "password": PASSWORD, **injected},
    )
    assert response.status_code == 403, response.text
    # Without it, the rest of the injected fields are ignored.
    injected.pop("organization_id")
    response = await client.post(
        "/api/v1/users",
        headers=admin,
        json={"email": "mass2@example.com", "password": PASSWORD, **injected},
    )
    assert response.status_code == 201, response.text
    user_id = response.json()["id"]
    stored = await client.get(f"/api/v1/users/{user_id}", headers=admin)
    _assert_not_assigned(stored.json(), tenant, "POST /users")
    assert stored.json()["role"] == "viewer"
    # A patch takes role and is_active only.
    patch = {"email": "evil@example.com", "password_hash": "x", **_injected(other_tenant)}
    patch.pop("role")
    response = await client.patch(f"/api/v1/users/{user_id}", headers=admin, json=patch)
    assert response.status_code in (200, 422), response.text
    stored = await client.get(f"/api/v1/users/{user_id}", headers=admin)
    _assert_not_assigned(stored.json(), tenant, "PATCH /users")
    assert stored.json()["email"] == "mass2@example.com"
    # Nobody promotes themself, nor creates a key above their role.
    viewer_id = tenant.user_ids[Role.VIEWER]
    for role in (Role.VIEWER, Role.MANAGER):
        response = await client.patch(
            f"/api/v1/users/{tenant.user_ids[role]}",
            headers=tenant.headers(role),
            json={"role": "admin"},
        )
        assert response.status_code == 403, response.text
        response = await client.post(
            "/api/v1/api-keys", headers=tenant.headers(role), json={"name": "up", "role": "admin"}
        )
        assert response.status_code == 403, response.text
    me = await client.get(f"/api/v1/users/{viewer_id}", headers=admin)
    assert me.json()["role"] == "viewer"


async def test_api_keys_belong_to_the_creators_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = await client.post(
        "/api/v1/api-keys",
        headers=tenant.headers(Role.ADMIN),
        json={"name": "mass", "role": "viewer", **_injected(other_tenant, role=False)},
    )
    assert response.status_code == 201, response.text
    _assert_not_assigned(response.json(), tenant, "POST /api-keys")
    key = {"X-API-Key": response.json()["key"]}
    me = await client.get("/api/v1/organizations", headers=key)
    assert [org["id"] for org in me.json()] == [str(tenant.org_id)]
    theirs = await client.get("/api/v1/api-keys", headers=other_tenant.headers(Role.ADMIN))
    assert response.json()["id"] not in theirs.text


# -- JWT -------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    """A JWT with exactly this header, these claims and sign(signing_input) as signature."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _hmac(algorithm: Any, key: str = TEST_SECRET) -> Any:
    return lambda data: hmac.new(key.encode(), data, algorithm).digest()


def _claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _variants(claims: dict[str, Any]) -> dict[str, str]:
    """Tokens that must all be refused: (header, claims, signature) that are not ours."""
    now = int(time.time())
    hs256 = _hmac(hashlib.sha256)

    def ours(**changes: Any) -> str:
        """Signed with the real key, claims changed (None removes one)."""
        changed = {**claims, **changes}
        return jwt.encode({k: v for k, v in changed.items() if v is not None}, TEST_SECRET)

    tampered = {**claims, "sub": str(uuid.uuid4())}
    return {
        "alg none": _forge({"alg": "none", "typ": "JWT"}, claims, lambda _: b""),
        "alg None": _forge({"alg": "None", "typ": "JWT"}, claims, lambda _: b""),
        "HS512, same secret": _forge({"alg": "HS512"}, claims, _hmac(hashlib.sha512)),
        "HS384, same secret": _forge({"alg": "HS384"}, claims, _hmac(hashlib.sha384)),
        "RS256 header, secret as public key": _forge({"alg": "RS256"}, claims, hs256),
        "ES256 header, secret as public key": _forge({"alg": "ES256"}, claims, hs256),
        "another key": jwt.encode(claims, "another secret " * 4, algorithm=ALGORITHM),
        "empty key named by kid": _forge(
            {"alg": "HS256", "kid": "../../../../dev/null"}, claims, _hmac(hashlib.sha256, "")
        ),
        "another key by jku": jwt.encode(
            claims,
            "attacker " * 8,
            algorithm=ALGORITHM,
            headers={"jku": "http://127.0.0.1:9/jwks.json", "kid": "attacker"},
        ),
        "tampered claims": _forge({"alg": "HS256"}, tampered, lambda _: b"x"),
        "expired": ours(exp=now - 60, iat=now - 120, nbf=now - 120),
        "not before in the future": ours(nbf=now + 3600),
        "issued in the future": ours(iat=now + 3600),
        "no expiry": ours(exp=None),
        "no session": ours(sid=None),
        "another issuer": ours(iss="elsewhere"),
        "another audience": ours(aud="other-api"),
        "not an access token": ours(typ="refresh"),
        "malformed session id": ours(sid=123),
        "malformed user id": ours(sub="not-a-uuid"),
        "expiry beyond the calendar": ours(exp=10**20),
    }


async def test_forged_and_confused_tokens_are_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    token = tenant.tokens[Role.ADMIN]
    claims = _claims_of(token)
    assert (claims["iss"], claims["aud"]) == (ISSUER, AUDIENCE)
    good = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200, good.text
    failures = []
    for name, forged in _variants(claims).items():
        for headers in ({"Authorization": f"Bearer {forged}"},):
            response = await client.get("/api/v1/auth/me", headers=headers)
            if response.status_code != 401:
                failures.append(f"{name}: {response.status_code} {response.text[:120]}")
                continue
            _assert_401_envelope(response, name)
        cookie = await client.get(
            "/api/v1/auth/me", headers={"Cookie": f"fleetcore_session={forged}"}
        )
        if cookie.status_code != 401:
            failures.append(f"{name} (cookie): {cookie.status_code} {cookie.text[:120]}")
    assert not failures, "\n".join(failures)


async def test_kid_and_jku_headers_are_ignored(client: httpx.AsyncClient, tenant: Tenant) -> None:
    """Our key verifies the token whatever kid/jku/jwk say: nothing is fetched or chosen."""
    claims = _claims_of(tenant.tokens[Role.ADMIN])
    headers = {"kid": "attacker", "jku": "http://127.0.0.1:9/jwks.json", "x5u": "http://x/"}
    token = jwt.encode(claims, TEST_SECRET, algorithm=ALGORITHM, headers=headers)
    response = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


async def test_a_refresh_token_is_not_an_access_token(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    signed_in = await client.post(
        "/api/v1/auth/login",
        json={"email": tenant.emails[Role.ADMIN], "password": PASSWORD},
    )
    refresh_token = signed_in.json()["refresh_token"]
    for headers in (
        {"Authorization": f"Bearer {refresh_token}"},
        {"Cookie": f"fleetcore_session={refresh_token}"},
        {"X-API-Key": refresh_token},
    ):
        response = await client.get("/api/v1/auth/me", headers=headers)
        _assert_401_envelope(response, f"refresh token in {next(iter(headers))}")
    # The access token is not a refresh token either.
    response = await client.post(
        "/api/v1/auth/refresh", json={"refresh_token": signed_in.json()["access_token"]}
    )
    _assert_401_envelope(response, "access token as refresh token")
