"""Device profiles: CRUD, validation, provisioning credentials, roles, tenancy, audit."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleetcore.auth.principal import Role
from fleetcore.auth.security import token_hash
from fleetcore.db import Database
from fleetcore.devices.models import DeviceProfile
from tests.support.tenants import Tenant

PROFILES = "/api/v1/device-profiles"

FULL_PROFILE: dict[str, Any] = {
    "name": "Environmental sensor",
    "description": "ESP32 with temperature and humidity",
    "telemetry_keys": [
        {"key": "temperature", "type": "number", "unit": "°C", "min": -40, "max": 125},
        {"key": "status", "type": "string"},
        {"key": "door_open", "type": "boolean"},
        {"key": "diag", "type": "json"},
    ],
    "out_of_range": "flag",
    "command_limits": {
        "allowed": {
            "set_speed": {
                "type": "object",
                "properties": {"rpm": {"type": "integer", "minimum": 0, "maximum": 3000}},
                "additionalProperties": False,
            },
            "ping": None,
        }
    },
    "offline_timeout_s": 120,
}


async def make_profile(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """Create a profile through the API as a manager."""
    body = {"name": "profile", **fields}
    response = await client.post(PROFILES, json=body, headers=tenant.headers(Role.MANAGER))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def profile_names(client: httpx.AsyncClient, tenant: Tenant) -> list[str]:
    """Names of every profile of the tenant (one page is enough here)."""
    response = await client.get(PROFILES, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    return [p["name"] for p in response.json()["items"]]


async def audit_events(
    client: httpx.AsyncClient, tenant: Tenant, action: str
) -> list[dict[str, Any]]:
    """The tenant's audit events of one action, newest first."""
    response = await client.get(
        "/api/v1/audit", params={"action": action}, headers=tenant.headers(Role.ADMIN)
    )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["items"]
    return events


async def test_profile_crud(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await make_profile(client, tenant, **FULL_PROFILE)
    assert created["name"] == "Environmental sensor"
    assert created["telemetry_keys"][0] == FULL_PROFILE["telemetry_keys"][0]
    assert created["telemetry_keys"][1] == {"key": "status", "type": "string"}
    assert created["out_of_range"] == "flag"
    assert created["command_limits"] == FULL_PROFILE["command_limits"]
    assert created["offline_timeout_s"] == 120
    assert created["provisioning_enabled"] is False
    assert created["provision_key"] is None
    assert created["provision_secret"] is None

    url = f"{PROFILES}/{created['id']}"
    fetched = await client.get(url, headers=tenant.headers(Role.VIEWER))
    assert fetched.status_code == 200
    assert fetched.json()["telemetry_keys"] == created["telemetry_keys"]
    assert "provision_secret" not in fetched.json()

    patched = await client.patch(
        url,
        json={"description": "changed", "out_of_range": "reject"},
        headers=tenant.headers(Role.MANAGER),
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "changed"
    assert patched.json()["out_of_range"] == "reject"
    assert patched.json()["telemetry_keys"] == created["telemetry_keys"]
    assert patched.json()["updated_at"] > created["updated_at"]

    deleted = await client.delete(url, headers=tenant.headers(Role.MANAGER))
    assert deleted.status_code == 204
    assert (await client.get(url, headers=tenant.headers(Role.VIEWER))).status_code == 404
    assert await profile_names(client, tenant) == []
    actions = [
        e["action"]
        for action in ("profile.create", "profile.update", "profile.delete")
        for e in await audit_events(client, tenant, action)
    ]
    assert actions == ["profile.create", "profile.update", "profile.delete"]


def _key(**fields: Any) -> dict[str, Any]:
    return {"name": "bad", "telemetry_keys": [{"key": "t", **fields}]}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(
            {"name": "bad", "telemetry_keys": [{"key": "t"}, {"key": "t", "type": "string"}]},
            {"body.telemetry_keys"},
            id="duplicate-key",
        ),
        pytest.param(_key(min=10, max=1), {"body.telemetry_keys.0"}, id="min-over-max"),
        pytest.param(_key(type="string", min=1), {"body.telemetry_keys.0"}, id="min-on-string"),
        pytest.param(_key(type="boolean", max=1), {"body.telemetry_keys.0"}, id="max-on-boolean"),
        pytest.param(_key(type="float"), {"body.telemetry_keys.0.type"}, id="bad-type"),
        pytest.param(_key(key="has space"), {"body.telemetry_keys.0.key"}, id="bad-key"),
        pytest.param(_key(unit="u" * 33), {"body.telemetry_keys.0.unit"}, id="long-unit"),
        pytest.param(
            {"name": "bad", "out_of_range": "ignore"}, {"body.out_of_range"}, id="out-of-range"
        ),
        pytest.param(
            {"name": "bad", "command_limits": {"allowed": {"set": {"type": "integr"}}}},
            {"body.command_limits.allowed"},
            id="limit-bad-schema",
        ),
        pytest.param(
            {"name": "bad", "command_limits": {"allowed": {"set": {"$ref": "http://x/s.json"}}}},
            {"body.command_limits.allowed"},
            id="limit-remote-ref",
        ),
        pytest.param(
            {"name": "bad", "command_limits": {"allowed": {"set": ["not", "a", "schema"]}}},
            {"body.command_limits.allowed.set"},
            id="limit-shape",
        ),
        pytest.param(
            {"name": "bad", "command_limits": {"set": {"rpm": {"min": 0}}}},
            {"body.command_limits.set"},
            id="limit-unknown-key",
        ),
        pytest.param(
            {"name": "bad", "offline_timeout_s": 0}, {"body.offline_timeout_s"}, id="timeout"
        ),
        pytest.param({"name": ""}, {"body.name"}, id="empty-name"),
        pytest.param({"name": "a", "description": "\x00"}, {"body.description"}, id="nul"),
        pytest.param({"name": "bad", "colour": "red"}, {"body.colour"}, id="unknown-field"),
        pytest.param(
            {"name": "bad", "provision_key": "short", "provision_secret": "s"},
            {"body.provision_key", "body.provision_secret"},
            id="weak-provisioning",
        ),
        pytest.param(
            {"name": "bad", "provisioning_enabled": False, "provision_secret": "s" * 16},
            {"body"},
            id="secret-while-disabled",
        ),
        pytest.param({"name": "bad", "mqtt_rate_per_s": 0}, {"body.mqtt_rate_per_s"}, id="rate-0"),
        pytest.param(
            {"name": "bad", "mqtt_rate_per_s": 10_000.5}, {"body.mqtt_rate_per_s"}, id="rate-high"
        ),
        pytest.param({"name": "bad", "mqtt_burst": 0}, {"body.mqtt_burst"}, id="burst-0"),
        pytest.param({"name": "bad", "mqtt_burst": 100_001}, {"body.mqtt_burst"}, id="burst-high"),
        pytest.param({"name": "bad", "mqtt_burst": 1.5}, {"body.mqtt_burst"}, id="burst-fraction"),
        pytest.param(
            {"name": "bad", "max_payload_bytes": 63}, {"body.max_payload_bytes"}, id="payload-low"
        ),
        pytest.param(
            {"name": "bad", "max_payload_bytes": 1024 * 1024 + 1},
            {"body.max_payload_bytes"},
            id="payload-high",
        ),
        pytest.param(
            {"name": "", "out_of_range": "x", "offline_timeout_s": -1},
            {"body.name", "body.out_of_range", "body.offline_timeout_s"},
            id="every-bad-field-named",
        ),
    ],
)
async def test_profile_validation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], fields: set[str]
) -> None:
    response = await client.post(PROFILES, json=body, headers=tenant.headers(Role.MANAGER))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {e["field"] for e in error["details"]["errors"]} == fields
    assert await profile_names(client, tenant) == []


async def test_patch_validation_changes_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    created = await make_profile(client, tenant, **FULL_PROFILE)
    url = f"{PROFILES}/{created['id']}"
    for body, field in [
        ({"name": None}, "body.name"),
        ({"telemetry_keys": [{"key": "a"}, {"key": "a"}]}, "body.telemetry_keys"),
        ({"offline_timeout_s": 0}, "body.offline_timeout_s"),
        ({"out_of_range": None}, "body.out_of_range"),
    ]:
        response = await client.patch(url, json=body, headers=tenant.headers(Role.MANAGER))
        assert response.status_code == 422, response.text
        assert field in {e["field"] for e in response.json()["error"]["details"]["errors"]}
    after = (await client.get(url, headers=tenant.headers(Role.VIEWER))).json()
    assert after == {k: v for k, v in created.items() if k != "provision_secret"}


async def test_mqtt_limits_default_set_and_change(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    plain = await make_profile(client, tenant, name="Plain")
    assert (plain["mqtt_rate_per_s"], plain["mqtt_burst"], plain["max_payload_bytes"]) == (
        50.0,
        200,
        65_536,
    )
    edges = {"mqtt_rate_per_s": 10_000, "mqtt_burst": 100_000, "max_payload_bytes": 1024 * 1024}
    loud = await make_profile(client, tenant, name="Loud", **edges)
    assert {k: loud[k] for k in edges} == edges
    quiet = {"mqtt_rate_per_s": 0.5, "mqtt_burst": 1, "max_payload_bytes": 64}
    url = f"{PROFILES}/{plain['id']}"
    patched = await client.patch(url, json=quiet, headers=tenant.headers(Role.MANAGER))
    assert patched.status_code == 200, patched.text
    fetched = (await client.get(url, headers=tenant.headers(Role.VIEWER))).json()
    assert {k: fetched[k] for k in quiet} == quiet
    assert fetched["updated_at"] > plain["updated_at"]
    (update,) = await audit_events(client, tenant, "profile.update")
    assert update["details"]["fields"] == sorted(quiet)
    for body, field in [
        ({"mqtt_rate_per_s": -1}, "body.mqtt_rate_per_s"),
        ({"mqtt_burst": None}, "body.mqtt_burst"),
        ({"max_payload_bytes": 2**31}, "body.max_payload_bytes"),
    ]:
        refused = await client.patch(url, json=body, headers=tenant.headers(Role.MANAGER))
        assert refused.status_code == 422, refused.text
        assert [e["field"] for e in refused.json()["error"]["details"]["errors"]] == [field]
    assert (await client.get(url, headers=tenant.headers(Role.VIEWER))).json() == fetched


async def test_name_unique_per_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    first = await make_profile(client, tenant, name="Meter")
    again = await client.post(PROFILES, json={"name": "Meter"}, headers=tenant.headers())
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "PROFILE_NAME_TAKEN"
    assert again.json()["error"]["details"] == {"field": "name"}
    await make_profile(client, other_tenant, name="Meter")  # another organization may
    second = await make_profile(client, tenant, name="Pump")
    renamed = await client.patch(
        f"{PROFILES}/{second['id']}", json={"name": "Meter"}, headers=tenant.headers()
    )
    assert renamed.status_code == 409
    assert renamed.json()["error"]["code"] == "PROFILE_NAME_TAKEN"
    same = await client.patch(
        f"{PROFILES}/{first['id']}", json={"name": "Meter"}, headers=tenant.headers()
    )
    assert same.status_code == 200
    assert sorted(await profile_names(client, tenant)) == ["Meter", "Pump"]


async def _stored(db: Database, profile_id: str) -> DeviceProfile:
    async with db.session() as session:
        profile = await session.scalar(
            select(DeviceProfile).where(DeviceProfile.id == uuid.UUID(profile_id))
        )
        assert profile is not None
        return profile


async def test_generated_provisioning_secret_is_shown_once_and_stored_hashed(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    created = await make_profile(client, tenant, name="Gateway", provisioning_enabled=True)
    assert created["provisioning_enabled"] is True
    key, secret = created["provision_key"], created["provision_secret"]
    assert key.startswith("fcp_")
    assert secret.startswith("fcps_")
    assert len(secret) >= 32
    stored = await _stored(db, created["id"])
    assert stored.provision_key == key
    assert stored.provision_secret_hash == token_hash(secret)
    fetched = await client.get(f"{PROFILES}/{created['id']}", headers=tenant.headers())
    assert "provision_secret" not in fetched.json()
    listed = await client.get(PROFILES, headers=tenant.headers())
    assert secret not in listed.text
    audit = await client.get("/api/v1/audit", headers=tenant.headers(Role.ADMIN))
    assert secret not in audit.text

    # Changing other fields keeps the credentials and shows no secret.
    patched = await client.patch(
        f"{PROFILES}/{created['id']}", json={"allow_reprovision": True}, headers=tenant.headers()
    )
    assert patched.json()["provision_key"] == key
    assert patched.json()["provision_secret"] is None
    assert (await _stored(db, created["id"])).provision_secret_hash == token_hash(secret)


async def test_provision_keys_are_issued_by_the_server(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    # Keys are global (devices present them without their organization): a chosen key could
    # only be refused as "taken", telling one organization another's key. So none is chosen.
    created = await make_profile(
        client, tenant, name="Chosen", provision_secret="a-long-enough-secret"
    )
    assert created["provisioning_enabled"] is True
    assert created["provision_key"].startswith("fcp_")
    assert created["provision_secret"] is None  # the client knows it; never echoed
    stored = await _stored(db, created["id"])
    assert stored.provision_secret_hash == token_hash("a-long-enough-secret")
    for org, key in ((other_tenant, created["provision_key"]), (tenant, "never-used-key-1")):
        # Another organization's key and an unused one: the same refusal, nothing learnt.
        clash = await client.post(
            PROFILES, json={"name": "Thief", "provision_key": key}, headers=org.headers()
        )
        assert clash.status_code == 422
        assert "body.provision_key" in clash.text  # not a field: keys are not chosen
    patch = await client.patch(
        f"{PROFILES}/{created['id']}",
        json={"provision_key": "another-key-12"},
        headers=tenant.headers(),
    )
    assert patch.status_code == 422

    # A new secret alone replaces the hash; disabling clears both.
    url = f"{PROFILES}/{created['id']}"
    patched = await client.patch(
        url, json={"provision_secret": "another-long-secret"}, headers=tenant.headers()
    )
    assert patched.status_code == 200, patched.text
    assert (await _stored(db, created["id"])).provision_secret_hash == token_hash(
        "another-long-secret"
    )
    disabled = await client.patch(
        url, json={"provisioning_enabled": False}, headers=tenant.headers()
    )
    assert disabled.json()["provisioning_enabled"] is False
    assert disabled.json()["provision_key"] is None
    stored = await _stored(db, created["id"])
    assert stored.provision_key is None
    assert stored.provision_secret_hash is None

    # Enabling again generates fresh credentials and shows the secret once.
    enabled = await client.patch(url, json={"provisioning_enabled": True}, headers=tenant.headers())
    assert enabled.json()["provision_key"].startswith("fcp_")
    assert enabled.json()["provision_secret"].startswith("fcps_")


async def test_delete_in_use_is_409(client: httpx.AsyncClient, tenant: Tenant) -> None:
    profile = await make_profile(client, tenant, name="Used")
    device = await client.post(
        "/api/v1/devices",
        json={"name": "d", "serial_number": "SN-1", "profile_id": profile["id"]},
        headers=tenant.headers(Role.MANAGER),
    )
    assert device.status_code == 201, device.text
    url = f"{PROFILES}/{profile['id']}"
    refused = await client.delete(url, headers=tenant.headers(Role.MANAGER))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "PROFILE_IN_USE"
    assert refused.json()["error"]["details"] == {"devices": 1}
    assert (await client.get(url, headers=tenant.headers())).status_code == 200

    # A deleted device does not hold the profile.
    gone = await client.delete(
        f"/api/v1/devices/{device.json()['id']}", headers=tenant.headers(Role.MANAGER)
    )
    assert gone.status_code == 204
    assert (await client.delete(url, headers=tenant.headers(Role.MANAGER))).status_code == 204
    assert (await client.get(url, headers=tenant.headers())).status_code == 404


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
async def test_below_manager_cannot_write(
    client: httpx.AsyncClient, tenant: Tenant, role: Role
) -> None:
    profile = await make_profile(client, tenant, name="Kept")
    url = f"{PROFILES}/{profile['id']}"
    headers = tenant.headers(role)
    for response in (
        await client.post(PROFILES, json={"name": "New"}, headers=headers),
        await client.patch(url, json={"name": "Renamed"}, headers=headers),
        await client.delete(url, headers=headers),
    ):
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    assert (await client.get(url, headers=headers)).json()["name"] == "Kept"
    assert await profile_names(client, tenant) == ["Kept"]


async def test_other_organization_sees_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    profile = await make_profile(client, tenant, name="Private")
    url = f"{PROFILES}/{profile['id']}"
    intruder = other_tenant.headers(Role.ADMIN)
    for response in (
        await client.get(url, headers=intruder),
        await client.patch(url, json={"name": "Stolen"}, headers=intruder),
        await client.delete(url, headers=intruder),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "PROFILE_NOT_FOUND"
    assert await profile_names(client, other_tenant) == []
    assert await profile_names(client, tenant) == ["Private"]


async def test_list_walks_every_page(client: httpx.AsyncClient, tenant: Tenant) -> None:
    names = [f"profile{i:02d}" for i in range(7)]
    for name in reversed(names):
        await make_profile(client, tenant, name=name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(PROFILES, params=params, headers=tenant.headers())).json()
        seen += [p["name"] for p in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    assert pages == 3
