"""GET / PUT /api/v1/housekeeping/retention: admins only, audited, one organization's days."""

from __future__ import annotations

import httpx

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant

URL = "/api/v1/housekeeping/retention"


def _days(body: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    return {row["table"]: row["days"] for row in body["tables"]}  # type: ignore[misc]


async def test_defaults_then_own_days_then_back_to_the_default(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.headers(Role.ADMIN)
    first = await client.get(URL, headers=admin)
    assert first.status_code == 200, first.text
    assert _days(first.json()) == {"audit_events": 365, "device_events": 365, "dead_letters": 30}
    assert all(row["is_default"] for row in first.json()["tables"])

    changed = await client.put(URL, headers=admin, json={"audit_events": 400, "dead_letters": 0})
    assert changed.status_code == 200, changed.text
    assert _days(changed.json()) == {"audit_events": 400, "device_events": 365, "dead_letters": 0}
    rows = {row["table"]: row for row in changed.json()["tables"]}
    assert not rows["audit_events"]["is_default"]
    assert rows["device_events"]["is_default"]
    assert rows["audit_events"]["updated_at"] is not None

    reset = await client.put(URL, headers=admin, json={"audit_events": None})
    assert _days(reset.json())["audit_events"] == 365
    assert _days(reset.json())["dead_letters"] == 0  # left out: unchanged

    log = await client.get(
        "/api/v1/audit",
        headers=admin,
        params={"action": "housekeeping.retention.update"},
    )
    assert log.status_code == 200, log.text
    events = log.json()["items"]
    assert len(events) == 2
    details = [event["details"] for event in events]
    assert {"before": {"audit_events": 400}, "after": {"audit_events": 365}} in [
        {k: d[k] for k in ("before", "after")} for d in details
    ]


async def test_one_organizations_days_are_its_own(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    await client.put(URL, headers=tenant.headers(Role.ADMIN), json={"device_events": 7})
    theirs = await client.get(URL, headers=other_tenant.headers(Role.ADMIN))
    assert _days(theirs.json())["device_events"] == 365


async def test_only_admins(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for role in (Role.MANAGER, Role.OPERATOR, Role.VIEWER):
        for method in ("GET", "PUT"):
            kwargs = {"json": {"device_events": 7}} if method == "PUT" else {}
            response = await client.request(method, URL, headers=tenant.headers(role), **kwargs)
            assert response.status_code == 403, (role, method, response.text)
            assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    unchanged = await client.get(URL, headers=tenant.headers(Role.ADMIN))
    assert _days(unchanged.json())["device_events"] == 365


async def test_bad_days_are_refused_naming_the_table(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    admin = tenant.headers(Role.ADMIN)
    for body, field in (
        ({"audit_events": 5}, "audit_events"),  # under the audit floor (30 days)
        ({"device_events": -1}, "device_events"),
        ({"dead_letters": 4000}, "dead_letters"),
        ({"device_status_history": 5}, "device_status_history"),  # not the organization's
        ({"dead_letters": "soon"}, "dead_letters"),
    ):
        response = await client.put(URL, headers=admin, json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.text, body
    allowed = await client.put(URL, headers=admin, json={"audit_events": 30, "device_events": 1})
    assert allowed.status_code == 200
