"""GET /api/v1/telemetry/archives: the caller's organization's archived days, never another's."""

from __future__ import annotations

import uuid
from datetime import date

import httpx

from fleetcore.archive.models import TelemetryArchive
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from tests.support.tenants import Tenant

URL = "/api/v1/telemetry/archives"


async def add_archive(db: Database, org_id: uuid.UUID, day: date, **values: object) -> uuid.UUID:
    """An archive record of the organization's day (as the archive writer leaves it)."""
    record = TelemetryArchive(
        organization_id=org_id,
        day=day,
        rows=1234,
        files=1,
        bytes=5678,
        min_ts=1_700_000_000_000,
        max_ts=1_700_000_060_000,
        store="file",
        location=f"org={org_id}/day={day.isoformat()}",
        manifest_sha256="0" * 64,
        **values,
    )
    async with db.session(write=True) as session:
        session.add(record)
        await session.commit()
        return record.id


async def test_list_shows_the_organizations_days(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = [
        await add_archive(db, tenant.org_id, date(2025, 1, 1)),
        await add_archive(db, tenant.org_id, date(2025, 1, 2), stale_at=utcnow()),
        await add_archive(db, tenant.org_id, date(2025, 1, 3), purged_at=utcnow()),
    ]
    theirs = await add_archive(db, other_tenant.org_id, date(2025, 1, 2))
    response = await client.get(URL, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["id"] for i in items] == [str(i) for i in reversed(ids)]
    assert [i["state"] for i in items] == ["purged", "stale", "archived"]
    first = items[-1]
    assert first["day"] == "2025-01-01"
    assert (first["rows"], first["files"], first["bytes"]) == (1234, 1, 5678)
    assert first["min_ts"] == "2023-11-14T22:13:20.000Z"
    assert first["manifest"] == f"org={tenant.org_id}/day=2025-01-01/_manifest.json"
    assert str(theirs) not in response.text
    assert str(other_tenant.org_id) not in response.text

    ranged = await client.get(
        URL, headers=tenant.headers(Role.VIEWER), params={"from": "2025-01-02", "to": "2025-01-02"}
    )
    assert [i["day"] for i in ranged.json()["items"]] == ["2025-01-02"]
    other = await client.get(URL, headers=other_tenant.headers(Role.ADMIN))
    assert [i["id"] for i in other.json()["items"]] == [str(theirs)]


async def test_list_refuses_bad_ranges(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = tenant.headers(Role.VIEWER)
    backwards = await client.get(
        URL, headers=headers, params={"from": "2025-02-01", "to": "2025-01-01"}
    )
    assert backwards.status_code == 422
    assert backwards.json()["error"]["code"] == "INVALID_RANGE"
    bad = await client.get(URL, headers=headers, params={"from": "yesterday"})
    assert bad.status_code == 422
    assert "error" in bad.json()
    assert (await client.get(URL)).status_code == 401
