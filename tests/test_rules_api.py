"""The rules API: validation with clear errors, roles, organizations, and the dry run."""

from __future__ import annotations

from typing import Any

import httpx

from fleetcore.auth.principal import Role
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, make_rule, send
from tests.support.tenants import Tenant

MIN = 60_000


async def test_create_read_list_change_delete(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device_id, _ = await new_device(client, tenant)
    rule = await make_rule(
        client, tenant, name="Too hot", device_id=device_id, condition=HOT, duration_s=30
    )
    assert rule["condition"] == {"type": "threshold", "key": "t", "op": ">", "value": 30.0}
    assert rule["severity"] == "warning"
    assert rule["enabled"] is True
    viewer = tenant.headers(Role.VIEWER)
    got = await client.get(f"/api/v1/rules/{rule['id']}", headers=viewer)
    assert got.json() == rule
    listed = await client.get("/api/v1/rules", headers=viewer, params={"device_id": device_id})
    assert [r["id"] for r in listed.json()["items"]] == [rule["id"]]
    manager = tenant.headers(Role.MANAGER)
    patched = await client.patch(
        f"/api/v1/rules/{rule['id']}",
        headers=manager,
        json={"severity": "critical", "enabled": False},
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["severity"], patched.json()["enabled"]) == ("critical", False)
    disabled = await client.get("/api/v1/rules", headers=viewer, params={"enabled": "false"})
    assert [r["id"] for r in disabled.json()["items"]] == [rule["id"]]
    deleted = await client.delete(f"/api/v1/rules/{rule['id']}", headers=manager)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/rules/{rule['id']}", headers=viewer)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "RULE_NOT_FOUND"
    audit = await client.get("/api/v1/audit", headers=tenant.headers(Role.ADMIN))
    actions = {e["action"] for e in audit.json()["items"]}
    assert {"rule.create", "rule.update", "rule.delete"} <= actions


async def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_validation_errors_are_clear_and_change_nothing(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, _ = await new_device(client, tenant)
    manager = tenant.headers(Role.MANAGER)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "r", "condition": HOT}, "exactly one of device_id"),
        (
            {
                "name": "r",
                "device_id": device_id,
                "condition": {"key": "t", "op": ">", "value": "x"},
            },
            "number",
        ),
        ({"name": "r", "device_id": device_id, "condition": HOT, "severity": "urgent"}, "severity"),
        ({"name": "r", "device_id": device_id, "condition": HOT, "duration_s": -1}, "duration_s"),
        ({"name": "", "device_id": device_id, "condition": HOT}, "name"),
        ({"name": "r", "device_id": device_id}, "condition"),
        ({"name": "r", "device_id": "not-a-uuid", "condition": HOT}, "device_id"),
    ]
    for body, hint in cases:
        error = await error_of(await client.post("/api/v1/rules", headers=manager, json=body), 422)
        assert error["code"] == "VALIDATION_ERROR"
        assert hint in str(error), (body, error)
    listed = await client.get("/api/v1/rules", headers=manager)
    assert listed.json()["items"] == []


async def test_names_are_unique_and_scopes_belong_to_the_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device_id, _ = await new_device(client, tenant)
    theirs, _ = await new_device(client, other_tenant)
    await make_rule(client, tenant, name="Same", device_id=device_id, condition=HOT)
    manager = tenant.headers(Role.MANAGER)
    taken = await client.post(
        "/api/v1/rules",
        headers=manager,
        json={"name": "Same", "device_id": device_id, "condition": HOT},
    )
    assert (await error_of(taken, 409))["code"] == "RULE_NAME_TAKEN"
    foreign = await client.post(
        "/api/v1/rules", headers=manager, json={"name": "x", "device_id": theirs, "condition": HOT}
    )
    assert (await error_of(foreign, 404))["code"] == "DEVICE_NOT_FOUND"
    mine = await client.get("/api/v1/rules", headers=tenant.headers(Role.VIEWER))
    hidden = await client.get(
        f"/api/v1/rules/{mine.json()['items'][0]['id']}", headers=other_tenant.headers(Role.ADMIN)
    )
    assert hidden.status_code == 404


async def test_only_managers_change_rules(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device_id, _ = await new_device(client, tenant)
    body = {"name": "r", "device_id": device_id, "condition": HOT}
    for role in (Role.VIEWER, Role.OPERATOR):
        refused = await client.post("/api/v1/rules", headers=tenant.headers(role), json=body)
        assert (await error_of(refused, 403))["code"] == "PERMISSION_DENIED"
    rule = await make_rule(client, tenant, **body)
    refused = await client.delete(
        f"/api/v1/rules/{rule['id']}", headers=tenant.headers(Role.OPERATOR)
    )
    assert refused.status_code == 403


async def test_dry_run_shows_when_a_rule_would_have_fired_and_cleared(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    for minute, value in enumerate([20, 31, 32, 33, 20, 35, 36, 20]):
        await send(live_client, token, T0 + minute * MIN, t=value)
    body = {
        "device_id": device_id,
        "condition": HOT,
        "duration_s": 60,
        "start": str(T0),
        "end": str(T0 + 10 * MIN),
    }
    response = await live_client.post(
        "/api/v1/rules/dry-run", headers=live_tenant.headers(Role.VIEWER), json=body
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["devices"], result["readings"], result["truncated"]) == (1, 8, False)
    episodes = [(e["opened_at"], e["cleared_at"], e["values"]) for e in result["episodes"]]
    assert episodes == [
        ("2026-11-21T22:28:40Z", "2026-11-21T22:30:40Z", {"t": 32.0}),  # held 60 s at minute 2
        ("2026-11-21T22:32:40Z", "2026-11-21T22:33:40Z", {"t": 36.0}),
    ]
    saved = await make_rule(live_client, live_tenant, device_id=device_id, condition=HOT)
    again = await live_client.post(
        "/api/v1/rules/dry-run",
        headers=live_tenant.headers(Role.VIEWER),
        json={"rule_id": saved["id"], "start": str(T0), "end": str(T0 + 10 * MIN)},
    )
    assert [e["opened_at"] for e in again.json()["episodes"]] == [
        "2026-11-21T22:27:40Z",
        "2026-11-21T22:31:40Z",
    ]


async def test_dry_run_of_no_data_sees_the_gaps(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    for minute in (0, 1, 2, 20, 21):
        await send(live_client, token, T0 + minute * MIN, t=1)
    response = await live_client.post(
        "/api/v1/rules/dry-run",
        headers=live_tenant.headers(Role.VIEWER),
        json={
            "device_id": device_id,
            "condition": {"type": "no_data", "minutes": 10},
            "start": str(T0),
            "end": str(T0 + 60 * MIN),
        },
    )
    episodes = response.json()["episodes"]
    assert [(e["opened_at"], e["cleared_at"]) for e in episodes] == [
        ("2026-11-21T22:38:40Z", "2026-11-21T22:46:40Z"),  # silent from minute 2 to 20
        ("2026-11-21T22:57:40Z", None),  # silent since minute 21, still at the end
    ]


async def test_dry_run_refuses_bad_requests(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, _ = await new_device(live_client, live_tenant)
    viewer = live_tenant.headers(Role.VIEWER)
    nothing = await live_client.post(
        "/api/v1/rules/dry-run", headers=viewer, json={"start": str(T0)}
    )
    assert "rule_id, or a condition" in str(await error_of(nothing, 422))
    backwards = await live_client.post(
        "/api/v1/rules/dry-run",
        headers=viewer,
        json={"device_id": device_id, "condition": HOT, "start": str(T0), "end": str(T0 - 1)},
    )
    assert (await error_of(backwards, 422))["code"] == "INVALID_RANGE"
    bad_time = await live_client.post(
        "/api/v1/rules/dry-run",
        headers=viewer,
        json={"device_id": device_id, "condition": HOT, "start": "yesterday"},
    )
    assert bad_time.status_code == 422
