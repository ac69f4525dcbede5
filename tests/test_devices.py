"""Devices: CRUD, validation, serials, status, tokens, filters, sorting, pages, roles, tenancy."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from fleetcore.assets.models import Asset
from fleetcore.auth.principal import Role
from fleetcore.auth.security import token_hash
from fleetcore.db import Database
from fleetcore.devices.models import DeviceCredential
from tests.support.tenants import Tenant

DEVICES = "/api/v1/devices"
ME = "/api/v1/devices/me"


async def make_device(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """Create a device through the API as a manager; the answer holds its token."""
    body = {"name": "device", "serial_number": f"SN-{uuid.uuid4().hex[:8]}", **fields}
    response = await client.post(DEVICES, json=body, headers=tenant.headers(Role.MANAGER))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def make_asset(db: Database, org_id: uuid.UUID, name: str = "site") -> str:
    """An asset row (the assets API is another domain's)."""
    async with db.session() as session:
        asset = Asset(organization_id=org_id, name=name, type="site")
        session.add(asset)
        await session.commit()
        return str(asset.id)


async def list_all(
    client: httpx.AsyncClient, tenant: Tenant, **params: Any
) -> list[dict[str, Any]]:
    """Every device matching `params`, walking the pages."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(DEVICES, params=query, headers=tenant.headers(Role.VIEWER))
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def serials(client: httpx.AsyncClient, tenant: Tenant, **params: Any) -> list[str]:
    """Serial numbers of the devices matching `params`, in answer order."""
    return [d["serial_number"] for d in await list_all(client, tenant, **params)]


def device_headers(token: str) -> dict[str, str]:
    """How a device authenticates."""
    return {"X-Device-Token": token}


async def test_create_get_update_delete(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    profile = await client.post(
        "/api/v1/device-profiles", json={"name": "Sensor"}, headers=tenant.headers()
    )
    asset_id = await make_asset(db, tenant.org_id)
    created = await make_device(
        client,
        tenant,
        name="Boiler sensor",
        serial_number="ESP32-0001",
        profile_id=profile.json()["id"],
        asset_id=asset_id,
        labels=["floor:2", "boiler", "floor:2"],
        properties={"fw": "1.2.0", "channels": [1, 2]},
        location={"latitude": 52.52, "longitude": 13.405, "altitude": 34},
    )
    assert created["status"] == "provisioned"
    assert created["labels"] == ["boiler", "floor:2"]
    assert created["location"] == {"latitude": 52.52, "longitude": 13.405, "altitude": 34}
    assert created["profile_id"] == profile.json()["id"]
    assert created["asset_id"] == asset_id
    token = created["access_token"]
    assert token.startswith("fcd_")
    assert len(token) >= 4 + 22  # at least 128 bits of URL-safe base64

    async with db.session() as session:
        stored = (
            await session.scalars(
                select(DeviceCredential).where(
                    DeviceCredential.device_id == uuid.UUID(created["id"])
                )
            )
        ).all()
    assert [c.token_hash for c in stored] == [token_hash(token)]

    url = f"{DEVICES}/{created['id']}"
    fetched = await client.get(url, headers=tenant.headers(Role.VIEWER))
    assert fetched.status_code == 200
    assert "access_token" not in fetched.json()
    assert token not in fetched.text
    assert fetched.json() == {k: v for k, v in created.items() if k != "access_token"}

    patched = await client.patch(
        url,
        json={
            "name": "Boiler sensor 2",
            "labels": ["boiler", "new"],
            "properties": {"fw": "1.3.0"},
            "location": None,
            "profile_id": None,
        },
        headers=tenant.headers(Role.MANAGER),
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Boiler sensor 2"
    assert body["labels"] == ["boiler", "new"]
    assert body["properties"] == {"fw": "1.3.0"}
    assert body["location"] is None
    assert body["profile_id"] is None
    assert body["asset_id"] == asset_id  # not sent, not changed
    assert body["serial_number"] == "ESP32-0001"
    assert body["updated_at"] > created["updated_at"]
    assert (await client.get(url, headers=tenant.headers())).json() == body

    # A label-only change also counts as an update.
    relabelled = await client.patch(url, json={"labels": []}, headers=tenant.headers())
    assert relabelled.json()["labels"] == []
    assert relabelled.json()["updated_at"] > body["updated_at"]

    deleted = await client.delete(url, headers=tenant.headers(Role.MANAGER))
    assert deleted.status_code == 204
    for response in (
        await client.get(url, headers=tenant.headers()),
        await client.patch(url, json={"name": "x"}, headers=tenant.headers()),
        await client.delete(url, headers=tenant.headers()),
        await client.post(f"{url}/credentials/rotate", headers=tenant.headers()),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    assert await serials(client, tenant) == []
    unauthorized = await client.get(ME, headers=device_headers(token))
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"

    audit = await client.get("/api/v1/audit", headers=tenant.headers(Role.ADMIN))
    actions = [e["action"] for e in audit.json()["items"] if e["target_id"] == created["id"]]
    assert actions == ["device.delete", "device.update", "device.update", "device.create"]
    assert token not in audit.text


LONG_PROPERTIES = {"blob": "x" * (16 * 1024)}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param({"serial_number": "SN-1"}, {"body.name"}, id="missing-name"),
        pytest.param({"name": "  ", "serial_number": "SN-1"}, {"body.name"}, id="blank-name"),
        pytest.param({"name": "d"}, {"body.serial_number"}, id="missing-serial"),
        # PostgreSQL refuses NUL in text: it must be a 422, never a 500.
        pytest.param({"name": "a\u0000b", "serial_number": "S"}, {"body.name"}, id="nul-name"),
        pytest.param({"name": "d", "serial_number": "A\nB"}, {"body.serial_number"}, id="ctrl"),
        pytest.param(
            {"name": "d", "serial_number": "S" * 129}, {"body.serial_number"}, id="long-serial"
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "labels": [f"l{i}" for i in range(33)]},
            {"body.labels"},
            id="too-many-labels",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "labels": ["ok", "has space"]},
            {"body.labels.1"},
            id="bad-label",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "labels": ["x" * 65]},
            {"body.labels.0"},
            id="long-label",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "labels": [""]},
            {"body.labels.0"},
            id="empty-label",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "properties": LONG_PROPERTIES},
            {"body.properties"},
            id="big-properties",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "properties": ["not", "an", "object"]},
            {"body.properties"},
            id="properties-not-object",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "location": {"latitude": 91, "longitude": 0}},
            {"body.location.latitude"},
            id="latitude",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "location": {"latitude": 0, "longitude": -181}},
            {"body.location.longitude"},
            id="longitude",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "location": {"latitude": 0}},
            {"body.location.longitude"},
            id="half-location",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "profile_id": "not-a-uuid"},
            {"body.profile_id"},
            id="profile-id",
        ),
        pytest.param(
            {"name": "d", "serial_number": "S", "status": "active"},
            {"body.status"},
            id="status-on-create",
        ),
        pytest.param(
            {
                "name": "",
                "serial_number": "",
                "labels": ["bad label"],
                "location": {"latitude": 100, "longitude": 200},
            },
            {
                "body.name",
                "body.serial_number",
                "body.labels.0",
                "body.location.latitude",
                "body.location.longitude",
            },
            id="every-bad-field-named",
        ),
    ],
)
async def test_create_validation(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, Any], fields: set[str]
) -> None:
    response = await client.post(DEVICES, json=body, headers=tenant.headers(Role.MANAGER))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert {e["field"] for e in error["details"]["errors"]} == fields
    assert await serials(client, tenant) == []


async def test_nan_in_properties_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    content = b'{"name": "d", "serial_number": "S", "properties": {"x": NaN}}'
    response = await client.post(
        DEVICES,
        content=content,
        headers={**tenant.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert await serials(client, tenant) == []


async def test_references_must_be_of_the_organization(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    theirs = await client.post(
        "/api/v1/device-profiles", json={"name": "Theirs"}, headers=other_tenant.headers()
    )
    their_asset = await make_asset(db, other_tenant.org_id)
    cases = [
        ("profile_id", theirs.json()["id"], "PROFILE_NOT_FOUND"),
        ("profile_id", str(uuid.uuid4()), "PROFILE_NOT_FOUND"),
        ("asset_id", their_asset, "ASSET_NOT_FOUND"),
        ("asset_id", str(uuid.uuid4()), "ASSET_NOT_FOUND"),
    ]
    for field, value, code in cases:
        body = {"name": "d", "serial_number": "SN-1", field: value}
        response = await client.post(DEVICES, json=body, headers=tenant.headers())
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["details"] == {"field": field}
    assert await serials(client, tenant) == []

    device = await make_device(client, tenant, serial_number="SN-2")
    for field, value, code in cases:
        response = await client.patch(
            f"{DEVICES}/{device['id']}", json={field: value}, headers=tenant.headers()
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == code
    fetched = (await client.get(f"{DEVICES}/{device['id']}", headers=tenant.headers())).json()
    assert fetched["profile_id"] is None
    assert fetched["asset_id"] is None


async def test_patch_validation_changes_nothing(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device = await make_device(client, tenant, labels=["a"], properties={"k": 1})
    url = f"{DEVICES}/{device['id']}"
    for body, field in [
        ({"name": None}, "body.name"),
        ({"serial_number": None}, "body.serial_number"),
        ({"labels": None}, "body.labels"),
        ({"status": "broken"}, "body.status"),
        ({"properties": LONG_PROPERTIES}, "body.properties"),
        ({"location": {"latitude": -91, "longitude": 0}}, "body.location.latitude"),
        ({"labels": ["ok", "no/slash"]}, "body.labels.1"),
    ]:
        response = await client.patch(url, json=body, headers=tenant.headers(Role.MANAGER))
        assert response.status_code == 422, response.text
        assert field in {e["field"] for e in response.json()["error"]["details"]["errors"]}
    after = (await client.get(url, headers=tenant.headers())).json()
    assert after == {k: v for k, v in device.items() if k != "access_token"}


async def test_serial_unique_among_live_devices(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    first = await make_device(client, tenant, serial_number="DUP-1")
    again = await client.post(
        DEVICES, json={"name": "again", "serial_number": "DUP-1"}, headers=tenant.headers()
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "DEVICE_SERIAL_TAKEN"
    assert again.json()["error"]["details"] == {"field": "serial_number"}
    await make_device(client, other_tenant, serial_number="DUP-1")  # other organization: fine

    second = await make_device(client, tenant, serial_number="DUP-2")
    clash = await client.patch(
        f"{DEVICES}/{second['id']}", json={"serial_number": "DUP-1"}, headers=tenant.headers()
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "DEVICE_SERIAL_TAKEN"
    assert sorted(await serials(client, tenant)) == ["DUP-1", "DUP-2"]

    # A deleted device's serial is free again, for a new device or a renamed one.
    await client.delete(f"{DEVICES}/{first['id']}", headers=tenant.headers())
    renamed = await client.patch(
        f"{DEVICES}/{second['id']}", json={"serial_number": "DUP-1"}, headers=tenant.headers()
    )
    assert renamed.status_code == 200
    await client.delete(f"{DEVICES}/{second['id']}", headers=tenant.headers())
    reused = await make_device(client, tenant, serial_number="DUP-1")
    assert reused["id"] not in (first["id"], second["id"])
    assert await serials(client, tenant) == ["DUP-1"]


async def test_device_token_activates_and_identifies(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device = await make_device(client, tenant, name="Pump", serial_number="P-1")
    token = device["access_token"]
    me = await client.get(ME, headers=device_headers(token))
    assert me.status_code == 200, me.text
    assert me.json() == {
        "id": device["id"],
        "name": "Pump",
        "serial_number": "P-1",
        "profile_id": None,
        "status": "active",
    }
    fetched = (await client.get(f"{DEVICES}/{device['id']}", headers=tenant.headers())).json()
    assert fetched["status"] == "active"
    assert fetched["last_seen_at"] is not None
    bearer = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert bearer.status_code == 200
    assert bearer.json()["id"] == device["id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Device-Token": "fcd_not-a-token"},
        {"Authorization": "Bearer fcd_not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Device-Token": "x" * 1000},
    ],
)
async def test_bad_device_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get(ME, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("INVALID_DEVICE_TOKEN", "DEVICE_TOKEN_REQUIRED")


async def test_user_token_is_not_a_device_token(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.get(ME, headers=tenant.headers())
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"


async def test_disable_and_reenable(client: httpx.AsyncClient, tenant: Tenant) -> None:
    used = await make_device(client, tenant, serial_number="USED")
    unused = await make_device(client, tenant, serial_number="UNUSED")
    assert (await client.get(ME, headers=device_headers(used["access_token"]))).status_code == 200

    for device in (used, unused):
        response = await client.patch(
            f"{DEVICES}/{device['id']}", json={"status": "disabled"}, headers=tenant.headers()
        )
        assert response.status_code == 200
        assert response.json()["status"] == "disabled"
        refused = await client.get(ME, headers=device_headers(device["access_token"]))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"
    assert await serials(client, tenant, status="disabled", sort="serial_number") == [
        "UNUSED",
        "USED",
    ]

    # Re-enabling restores what the device had reached; the same token works again.
    enabled = await client.patch(
        f"{DEVICES}/{used['id']}", json={"status": "active"}, headers=tenant.headers()
    )
    assert enabled.json()["status"] == "active"
    enabled = await client.patch(
        f"{DEVICES}/{unused['id']}", json={"status": "active"}, headers=tenant.headers()
    )
    assert enabled.json()["status"] == "provisioned"
    assert (await client.get(ME, headers=device_headers(used["access_token"]))).status_code == 200
    me = await client.get(ME, headers=device_headers(unused["access_token"]))
    assert me.json()["status"] == "active"

    audit = await client.get(
        "/api/v1/audit", params={"action": "device.update"}, headers=tenant.headers(Role.ADMIN)
    )
    statuses = [e["details"].get("status") for e in audit.json()["items"]]
    assert ["active", "disabled"] in statuses
    assert ["disabled", "provisioned"] in statuses


async def test_rotate_credentials(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device = await make_device(client, tenant)
    old = device["access_token"]
    assert (await client.get(ME, headers=device_headers(old))).status_code == 200
    rotated = await client.post(
        f"{DEVICES}/{device['id']}/credentials/rotate", headers=tenant.headers(Role.MANAGER)
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["access_token"]
    assert rotated.json()["device_id"] == device["id"]
    assert new.startswith("fcd_")
    assert new != old
    refused = await client.get(ME, headers=device_headers(old))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"
    me = await client.get(ME, headers=device_headers(new))
    assert me.status_code == 200
    assert me.json()["id"] == device["id"]
    audit = await client.get(
        "/api/v1/audit",
        params={"action": "device.credentials.rotate"},
        headers=tenant.headers(Role.ADMIN),
    )
    assert [e["target_id"] for e in audit.json()["items"]] == [device["id"]]
    assert new not in audit.text
    assert old not in audit.text


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR])
async def test_below_manager_cannot_write(
    client: httpx.AsyncClient, tenant: Tenant, role: Role
) -> None:
    device = await make_device(client, tenant, name="Kept", serial_number="KEEP")
    url = f"{DEVICES}/{device['id']}"
    headers = tenant.headers(role)
    for response in (
        await client.post(DEVICES, json={"name": "n", "serial_number": "NEW"}, headers=headers),
        await client.patch(url, json={"name": "Renamed"}, headers=headers),
        await client.patch(url, json={"status": "disabled"}, headers=headers),
        await client.delete(url, headers=headers),
        await client.post(f"{url}/credentials/rotate", headers=headers),
        await client.post(
            f"{DEVICES}/import",
            files={"file": ("d.csv", b"name,serial_number\nx,NEW\n", "text/csv")},
            headers=headers,
        ),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "PERMISSION_DENIED"
    fetched = await client.get(url, headers=headers)
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "Kept"
    assert fetched.json()["status"] == "provisioned"
    assert await serials(client, tenant) == ["KEEP"]
    assert (await client.get(ME, headers=device_headers(device["access_token"]))).status_code == 200


async def test_other_organization_sees_404(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device = await make_device(client, tenant, name="Private", serial_number="PRIV")
    url = f"{DEVICES}/{device['id']}"
    intruder = other_tenant.headers(Role.ADMIN)
    for response in (
        await client.get(url, headers=intruder),
        await client.patch(url, json={"name": "Stolen"}, headers=intruder),
        await client.patch(url, json={"status": "disabled"}, headers=intruder),
        await client.delete(url, headers=intruder),
        await client.post(f"{url}/credentials/rotate", headers=intruder),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    assert await serials(client, other_tenant) == []
    assert await serials(client, other_tenant, q="PRIV") == []
    fetched = (await client.get(url, headers=tenant.headers())).json()
    assert fetched["name"] == "Private"
    assert (await client.get(ME, headers=device_headers(device["access_token"]))).status_code == 200


async def test_filters_and_search(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    profile = (
        await client.post("/api/v1/device-profiles", json={"name": "P"}, headers=tenant.headers())
    ).json()
    asset_id = await make_asset(db, tenant.org_id)
    await make_device(
        client, tenant, name="Boiler North", serial_number="A-1", labels=["heat", "north"]
    )
    await make_device(
        client,
        tenant,
        name="boiler south",
        serial_number="A-2",
        labels=["heat", "south"],
        profile_id=profile["id"],
    )
    await make_device(
        client, tenant, name="Chiller 100%", serial_number="B_1", labels=["cold", "north"]
    )
    disabled = await make_device(
        client, tenant, name="Spare", serial_number="X1", asset_id=asset_id
    )
    await client.patch(
        f"{DEVICES}/{disabled['id']}", json={"status": "disabled"}, headers=tenant.headers()
    )
    await make_device(client, other_tenant, name="Boiler elsewhere", serial_number="A-9")
    by_serial = {"sort": "serial_number"}

    assert await serials(client, tenant, **by_serial) == ["A-1", "A-2", "B_1", "X1"]
    assert await serials(client, tenant, status="disabled") == ["X1"]
    assert await serials(client, tenant, status="provisioned", **by_serial) == ["A-1", "A-2", "B_1"]
    assert await serials(client, tenant, label="heat", **by_serial) == ["A-1", "A-2"]
    assert await serials(client, tenant, label=["heat", "north"]) == ["A-1"]
    assert await serials(client, tenant, label="nowhere") == []
    assert await serials(client, tenant, profile_id=profile["id"]) == ["A-2"]
    assert await serials(client, tenant, asset_id=asset_id) == ["X1"]
    assert await serials(client, tenant, q="BOILER", **by_serial) == ["A-1", "A-2"]
    assert await serials(client, tenant, q="a-", **by_serial) == ["A-1", "A-2"]
    assert await serials(client, tenant, q="0%") == ["B_1"]  # % is literal
    assert await serials(client, tenant, q="%") == ["B_1"]
    assert await serials(client, tenant, q="_") == ["B_1"]  # _ is literal
    assert await serials(client, tenant, q="B_") == ["B_1"]
    assert await serials(client, tenant, q="heat") == []  # labels are not searched
    assert await serials(client, tenant, q="boiler", label="north") == ["A-1"]

    bad = await client.get(DEVICES, params={"status": "lost"}, headers=tenant.headers())
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["errors"][0]["field"] == "query.status"
    for params, field in (
        ({"profile_id": "x"}, "query.profile_id"),
        ({"q": "a\x00b"}, "query.q"),
        ({"q": "x" * 201}, "query.q"),
        ({"label": ["ok", "not ok"]}, "query.label.1"),
        ({"label": [f"l{i}" for i in range(33)]}, "query.label"),
    ):
        bad = await client.get(DEVICES, params=params, headers=tenant.headers())
        assert bad.status_code == 422, params
        assert bad.json()["error"]["details"]["errors"][0]["field"] == field


SORTS = ["name", "serial_number", "created_at", "updated_at"]


@pytest.mark.parametrize("sort", SORTS + [f"-{s}" for s in SORTS])
async def test_sort_and_walk_every_page(
    client: httpx.AsyncClient, tenant: Tenant, sort: str
) -> None:
    # Lower-case letters and digits only: the same order under any database collation.
    created = [
        await make_device(
            client, tenant, name=f"device{(i * 7) % 23:02d}", serial_number=f"sn{(i * 5) % 23:02d}"
        )
        for i in range(23)
    ]
    # Make updated_at disagree with created_at.
    for device in created[::3]:
        await client.patch(
            f"{DEVICES}/{device['id']}", json={"labels": ["touched"]}, headers=tenant.headers()
        )
    everything = {d["id"]: d for d in await list_all(client, tenant, limit=500)}
    assert len(everything) == 23

    key = sort.removeprefix("-")
    expected = sorted(everything.values(), key=lambda d: (d[key], d["id"]))
    if sort.startswith("-"):
        expected.reverse()
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sort": sort, "limit": 5}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get(DEVICES, params=params, headers=tenant.headers())).json()
        pages.append([d["id"] for d in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    walked = [device_id for page in pages for device_id in page]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert len(set(walked)) == 23  # no duplicates, nothing missing
    if key in ("name", "serial_number"):
        assert walked == [d["id"] for d in expected]
    else:  # timestamps may tie at the clock's resolution: check the order is monotonic
        values = [everything[i][key] for i in walked]
        assert values == sorted(values, reverse=sort.startswith("-"))


async def test_paging_limits_and_bad_cursors(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for i in range(3):
        await make_device(client, tenant, name=f"d{i}", serial_number=f"s{i}")
    first = (await client.get(DEVICES, params={"limit": 2}, headers=tenant.headers())).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    default = (await client.get(DEVICES, headers=tenant.headers())).json()
    assert len(default["items"]) == 3
    assert default["next_cursor"] is None
    for params in ({"limit": 0}, {"limit": 501}, {"sort": "colour"}):
        response = await client.get(DEVICES, params=params, headers=tenant.headers())
        assert response.status_code == 422, params
    for params in (
        {"cursor": "garbage!"},
        {"cursor": first["next_cursor"], "sort": "created_at"},  # a name cursor
        {"cursor": first["next_cursor"], "sort": "-updated_at"},
    ):
        response = await client.get(DEVICES, params=params, headers=tenant.headers())
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "INVALID_CURSOR"
