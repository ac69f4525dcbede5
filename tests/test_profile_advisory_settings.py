"""A profile's analytics settings and safety policy through the profile API: validated,
stored whole, cleared (the policy alone takes null), audited by field name."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant

API = "/api/v1/device-profiles"
POLICY: dict[str, Any] = {
    "methods": {
        "set_speed": {
            "params": {"rpm": {"type": "number", "min": 0, "max": 3000, "max_step": 100}}
        },
        "stop": {"critical": True},
    },
    "interlocks": [
        {
            "name": "no speed-up on a critical alert",
            "method": "set_speed",
            "param": "rpm",
            "direction": "increase",
            "when": {"severity_at_least": "critical"},
        }
    ],
}
ANALYTICS: dict[str, Any] = {
    "keys": {"vibration": {"sensitivity": {"z_threshold": 5.0}, "wear": {"threshold": 7.1}}},
    "recommend": [
        {"on": "wear", "key": "vibration", "kind": "inspect", "title": "Check the bearing"}
    ],
}


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> httpx.Response:
    return await client.post(
        API, headers=tenant.headers(Role.MANAGER), json={"name": "pump", **body}
    )


async def patch(
    client: httpx.AsyncClient, tenant: Tenant, profile_id: str, **body: Any
) -> httpx.Response:
    return await client.patch(
        f"{API}/{profile_id}", headers=tenant.headers(Role.MANAGER), json=body
    )


def error_fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    return [item["field"] for item in error["details"]["errors"]]


async def test_settings_are_stored_whole_and_read_back(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    created = await create(client, tenant, analytics=ANALYTICS, safety_policy=POLICY)
    assert created.status_code == 201, created.text
    body = created.json()
    # Stored with every default spelled out, so a later change of defaults is visible.
    assert body["analytics"]["enabled"] is True
    assert body["analytics"]["keys"]["vibration"]["wear"]["direction"] == "rising"
    assert body["analytics"]["recommend"][0]["expires_after_s"] == 86_400
    assert body["safety_policy"]["methods"]["stop"]["critical"] is True
    assert body["safety_policy"]["methods"]["set_speed"]["params"]["rpm"]["max_step"] == 100
    again = await client.get(f"{API}/{body['id']}", headers=tenant.headers(Role.VIEWER))
    assert again.json()["analytics"] == body["analytics"]
    assert again.json()["safety_policy"] == body["safety_policy"]


async def test_a_new_profile_has_default_analytics_and_no_policy(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = (await create(client, tenant)).json()
    assert body["safety_policy"] is None
    assert body["analytics"] == {"enabled": True, "keys": {}, "recommend": []}


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("safety_policy", {"methods": {"x": {"params": {"p": {"type": "float"}}}}}, "type"),
        ("safety_policy", {"methods": {}, "interlocks": [{"name": "i", "method": "nope"}]}, ""),
        ("safety_policy", {"methods": {}, "surprise": 1}, "surprise"),
        ("analytics", {"keys": {"t": {"sensitivity": {"no_such_setting": 1}}}}, "sensitivity"),
        ("analytics", {"recommend": [{"on": "spike", "kind": "stop", "title": "x"}]}, ""),
        ("analytics", [], ""),
    ],
)
async def test_bad_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, tenant: Tenant, field: str, value: Any, where: str
) -> None:
    fields = error_fields(await create(client, tenant, **{field: value}))
    assert any(f.startswith(f"body.{field}") and where in f for f in fields), fields
    profile = (await create(client, tenant, name="ok")).json()
    fields = error_fields(await patch(client, tenant, profile["id"], **{field: value}))
    assert any(f.startswith(f"body.{field}") for f in fields), fields


async def test_patch_changes_clears_and_audits_by_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    profile = (await create(client, tenant)).json()
    changed = await patch(client, tenant, profile["id"], safety_policy=POLICY, analytics=ANALYTICS)
    assert changed.status_code == 200, changed.text
    assert changed.json()["safety_policy"]["methods"]["stop"]["critical"] is True
    # null clears the policy (no gate); analytics may not be null
    cleared = await patch(client, tenant, profile["id"], safety_policy=None)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["safety_policy"] is None
    assert cleared.json()["analytics"]["keys"]["vibration"]["wear"]["threshold"] == 7.1
    assert error_fields(await patch(client, tenant, profile["id"], analytics=None)) == [
        "body.analytics"
    ]
    # an unrelated PATCH leaves both alone
    renamed = await patch(client, tenant, profile["id"], description="pumps")
    assert renamed.json()["analytics"] == cleared.json()["analytics"]
    assert renamed.json()["safety_policy"] is None
    log = await client.get(
        "/api/v1/audit",
        headers=tenant.headers(Role.ADMIN),
        params={"action": "profile.update", "target_id": profile["id"]},
    )
    assert log.status_code == 200, log.text
    fields = sorted(tuple(item["details"]["fields"]) for item in log.json()["items"])
    assert fields == [("analytics", "safety_policy"), ("description",), ("safety_policy",)]


async def test_only_managers_change_them(client: httpx.AsyncClient, tenant: Tenant) -> None:
    profile = (await create(client, tenant)).json()
    refused = await client.patch(
        f"{API}/{profile['id']}",
        headers=tenant.headers(Role.OPERATOR),
        json={"safety_policy": None},
    )
    assert refused.status_code == 403, refused.text
