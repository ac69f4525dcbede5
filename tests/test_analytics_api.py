"""The analytics read API on both databases: the fleet ranking, findings with filters and
pages, one device's health and wear, scoped to the caller's organization."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.advisory import DAY_MS, NOW_MS, add_finding, add_health, watch
from tests.support.devices import new_device
from tests.support.tenants import Tenant

WATCH = {
    "keys": {
        "vibration": {"wear": {"threshold": 12.0, "min_points": 120}},
        "temperature": {"wear": {"threshold": 90.0}},
        "current": {},
    }
}


def forged(raw: str) -> str:
    """A cursor made by hand (the API's are base64 of tagged JSON)."""
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def _devices(client: httpx.AsyncClient, tenant: Tenant, names: list[str]) -> list[str]:
    return [(await new_device(client, tenant, name=name))[0] for name in names]


async def test_the_fleet_is_ranked_worst_first_in_pages(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = await _devices(client, tenant, ["a", "b", "c", "d", "unscored"])
    for device_id, score in zip(ids, (0.9, 0.2, 0.55, 0.2), strict=False):
        await add_health(db, tenant.org_id, device_id, score)
    [theirs] = await _devices(client, other_tenant, ["theirs"])
    await add_health(db, other_tenant.org_id, theirs, 0.01)
    viewer = tenant.headers(Role.VIEWER)

    first = await client.get("/api/v1/analytics/fleet", headers=viewer, params={"limit": 3})
    assert first.status_code == 200, first.text
    body = first.json()
    tied = sorted([ids[1], ids[3]])  # equal scores: by device id
    assert [d["device_id"] for d in body["items"]] == [*tied, ids[2]]
    assert [d["score"] for d in body["items"]] == [0.2, 0.2, 0.55]
    top = body["items"][0]
    assert top["trend"] == "worsening"
    assert top["open_findings"] == 2
    assert [c["key"] for c in top["top_contributors"]] == ["vibration", "temperature"]
    assert body["next_cursor"]
    rest = await client.get(
        "/api/v1/analytics/fleet", headers=viewer, params={"cursor": body["next_cursor"]}
    )
    assert [d["device_id"] for d in rest.json()["items"]] == [ids[0]]  # unscored: not listed
    assert rest.json()["next_cursor"] is None

    theirs_view = await client.get("/api/v1/analytics/fleet", headers=other_tenant.headers())
    assert [d["name"] for d in theirs_view.json()["items"]] == ["theirs"]


async def test_findings_filter_and_page_newest_first(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    pump, fan = await _devices(client, tenant, ["pump", "fan"])
    made = {}
    made["old"] = await add_finding(db, tenant.org_id, pump, ts=NOW_MS - 3 * DAY_MS)
    made["spike"] = await add_finding(
        db, tenant.org_id, pump, ts=NOW_MS - DAY_MS, method="spike", severity="critical"
    )
    made["temp"] = await add_finding(db, tenant.org_id, pump, ts=NOW_MS, key="temperature")
    made["fan"] = await add_finding(db, tenant.org_id, fan, ts=NOW_MS - 2 * DAY_MS)
    headers = tenant.headers(Role.VIEWER)

    async def ids(**params: object) -> list[int]:
        answer = await client.get("/api/v1/analytics/findings", headers=headers, params=params)
        assert answer.status_code == 200, answer.text
        return [f["id"] for f in answer.json()["items"]]

    assert await ids() == [made["temp"], made["spike"], made["fan"], made["old"]]
    assert await ids(device_id=fan) == [made["fan"]]
    assert await ids(key="temperature") == [made["temp"]]
    assert await ids(method="spike") == [made["spike"]]
    assert await ids(severity="critical") == [made["spike"]]
    # from inclusive, to exclusive
    assert await ids(**{"from": NOW_MS - 2 * DAY_MS, "to": NOW_MS}) == [made["spike"], made["fan"]]
    assert await ids(device_id=pump, key="vibration", method="robust_z") == [made["old"]]

    answer = await client.get("/api/v1/analytics/findings", headers=headers, params={"limit": 2})
    page = answer.json()
    assert [f["id"] for f in page["items"]] == [made["temp"], made["spike"]]
    spike = page["items"][1]
    assert spike["device_name"] == "pump"
    assert spike["expected_low"] == 1.0
    assert spike["evidence"] == [[NOW_MS - 1000, 1.5], [NOW_MS, 9.0]]
    following = await client.get(
        "/api/v1/analytics/findings",
        headers=headers,
        params={"limit": 2, "cursor": page["next_cursor"]},
    )
    assert [f["id"] for f in following.json()["items"]] == [made["fan"], made["old"]]
    assert following.json()["next_cursor"] is None

    one = await client.get(f"/api/v1/analytics/findings/{made['spike']}", headers=headers)
    assert one.status_code == 200
    assert one.json()["method"] == "spike"
    assert one.json()["severity"] == "critical"


async def test_a_device_s_health_wear_and_findings(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    [pump] = await _devices(client, tenant, ["pump"])
    headers = tenant.headers(Role.VIEWER)
    bare = await client.get(f"/api/v1/analytics/devices/{pump}", headers=headers)
    assert bare.status_code == 200, bare.text
    assert bare.json() == {
        "device_id": pump,
        "name": "pump",
        "configured": False,
        "health": None,
        "wear": [],
        "recent_findings": [],
    }

    await watch(db, pump, WATCH)
    wear = {
        "vibration": {
            "status": "ok",
            "now_ms": NOW_MS,
            "eta_ms": NOW_MS + 20 * DAY_MS,
            "low_ms": NOW_MS + 12 * DAY_MS,
            "high_ms": NOW_MS + 30 * DAY_MS,
            "level": 0.8,
            "model": "linear",
            "points": 300,
            "current": 8.5,
            "threshold": 12.0,
        }
    }
    await add_health(db, tenant.org_id, pump, 0.42, wear=wear)
    finding = await add_finding(db, tenant.org_id, pump)
    answer = await client.get(f"/api/v1/analytics/devices/{pump}", headers=headers)
    body = answer.json()
    assert body["configured"] is True
    assert body["health"]["score"] == 0.42
    assert body["health"]["contributors"][0]["penalty"] == 0.3
    by_key = {w["key"]: w for w in body["wear"]}
    assert sorted(by_key) == ["temperature", "vibration"]  # "current" has no wear settings
    assert by_key["vibration"]["low_ms"] == NOW_MS + 12 * DAY_MS
    assert by_key["vibration"]["min_points"] == 120
    # Configured but not estimated yet: said so, with the profile's minimum.
    assert by_key["temperature"]["status"] == "not_enough_data"
    assert by_key["temperature"]["points"] == 0
    assert by_key["temperature"]["min_points"] == 100
    assert by_key["temperature"]["threshold"] == 90.0
    assert [f["id"] for f in body["recent_findings"]] == [finding]


async def test_another_organization_gets_404(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    [pump] = await _devices(client, tenant, ["pump"])
    await add_health(db, tenant.org_id, pump, 0.3)
    finding = await add_finding(db, tenant.org_id, pump)
    intruder = other_tenant.headers(Role.ADMIN)
    answer = await client.get(f"/api/v1/analytics/findings/{finding}", headers=intruder)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "FINDING_NOT_FOUND"
    answer = await client.get(f"/api/v1/analytics/devices/{pump}", headers=intruder)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    listed = await client.get(
        "/api/v1/analytics/findings", headers=intruder, params={"device_id": pump}
    )
    assert listed.json()["items"] == []
    missing = await client.get("/api/v1/analytics/findings/999999999", headers=intruder)
    assert missing.status_code == 404
    unknown = await client.get(f"/api/v1/analytics/devices/{uuid.uuid4()}", headers=intruder)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/api/v1/analytics/findings", {"method": "magic"}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"severity": "major"}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"device_id": "not-a-uuid"}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"from": "yesterday"}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"from": -1}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"to": 10**20}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"from": 5, "to": 5}, "INVALID_RANGE"),
        ("/api/v1/analytics/findings", {"key": ""}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"key": "k" * 129}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"limit": 0}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings", {"cursor": "!!"}, "INVALID_CURSOR"),
        ("/api/v1/analytics/fleet", {"limit": 501}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/fleet", {"cursor": "bm9wZQ"}, "INVALID_CURSOR"),
        # Numbers past what the columns hold must not reach the database driver.
        (
            "/api/v1/analytics/findings",
            {"cursor": forged('[["v", 9223372036854775808], ["v", 1]]')},
            "INVALID_CURSOR",
        ),
        (
            "/api/v1/analytics/fleet",
            {"cursor": forged(f'[["v", 18446744073709551615], ["uuid", "{uuid.uuid4()}"]]')},
            "INVALID_CURSOR",
        ),
        ("/api/v1/analytics/findings/0", {}, "VALIDATION_ERROR"),
        ("/api/v1/analytics/findings/abc", {}, "VALIDATION_ERROR"),
    ],
)
async def test_bad_query_parameters_are_422(
    client: httpx.AsyncClient, tenant: Tenant, path: str, params: dict[str, object], code: str
) -> None:
    answer = await client.get(path, headers=tenant.headers(Role.VIEWER), params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code


async def test_cursors_of_one_list_do_not_fit_the_other(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    a, b = await _devices(client, tenant, ["a", "b"])
    for device_id in (a, b):
        await add_health(db, tenant.org_id, device_id, 0.5)
        await add_finding(db, tenant.org_id, device_id)
    headers = tenant.headers(Role.VIEWER)
    fleet = await client.get("/api/v1/analytics/fleet", headers=headers, params={"limit": 1})
    findings = await client.get("/api/v1/analytics/findings", headers=headers, params={"limit": 1})
    swapped = [
        ("/api/v1/analytics/findings", fleet.json()["next_cursor"]),
        ("/api/v1/analytics/fleet", findings.json()["next_cursor"]),
    ]
    for path, cursor in swapped:
        answer = await client.get(path, headers=headers, params={"cursor": cursor})
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"]["code"] == "INVALID_CURSOR"


async def test_reading_needs_a_signed_in_organization_member(
    client: httpx.AsyncClient, tenant: Tenant, superuser: dict[str, str]
) -> None:
    assert (await client.get("/api/v1/analytics/fleet")).status_code == 401
    for path in ("/api/v1/analytics/fleet", "/api/v1/analytics/findings"):
        answer = await client.get(path, headers=tenant.headers(Role.VIEWER))
        assert answer.status_code == 200, answer.text
    # A platform superuser belongs to no organization.
    answer = await client.get("/api/v1/analytics/fleet", headers=superuser)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "NO_ORGANIZATION"
