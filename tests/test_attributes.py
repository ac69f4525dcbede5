"""Device attributes: scopes and roles, the shared version, desired vs reported, device tokens."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from fleetcore.attributes.models import DeviceAttribute
from fleetcore.auth.principal import Role
from fleetcore.auth.security import new_token, token_hash
from fleetcore.db import Database, utcnow
from fleetcore.devices.models import Device, DeviceCredential
from tests.support.tenants import Tenant

ME = "/api/v1/devices/me/attributes"


def url(device_id: uuid.UUID, *rest: str) -> str:
    return "/".join([f"/api/v1/devices/{device_id}/attributes", *rest])


async def make_device(
    db: Database, org_id: uuid.UUID, *, status: str = "active", deleted: bool = False
) -> tuple[uuid.UUID, str]:
    """A device (inserted with the ORM) and its access token."""
    token = new_token("dev_")
    async with db.session() as session:
        device = Device(
            organization_id=org_id,
            name="meter",
            serial_number=f"SN-{uuid.uuid4().hex[:10]}",
            status=status,
            deleted_at=utcnow() if deleted else None,
        )
        session.add(device)
        await session.flush()
        session.add(DeviceCredential(device_id=device.id, token_hash=token_hash(token)))
        await session.commit()
        return device.id, token


async def stored(db: Database, device_id: uuid.UUID) -> int:
    async with db.session() as session:
        count = await session.scalar(
            select(func.count()).where(DeviceAttribute.device_id == device_id)
        )
        return count or 0


async def put(
    client: httpx.AsyncClient, tenant: Tenant, device_id: uuid.UUID, scope: str, body: Any
) -> httpx.Response:
    return await client.put(url(device_id, scope), json=body, headers=tenant.headers(Role.MANAGER))


async def test_scopes_and_roles(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    device, _ = await make_device(db, tenant.org_id)
    server = await put(client, tenant, device, "server", {"site": "north", "floor": 3})
    assert server.status_code == 200, server.text
    assert server.json()["values"] == {"floor": 3, "site": "north"}
    assert server.json()["version"] == 1
    shared = await put(client, tenant, device, "shared", {"interval": 30})
    assert shared.json()["values"] == {"interval": 30}

    for role in (Role.VIEWER, Role.OPERATOR):
        headers = tenant.headers(role)
        for scope in ("server", "shared"):
            denied = await client.put(url(device, scope), json={"site": "x"}, headers=headers)
            assert denied.status_code == 403
            assert denied.json()["error"]["code"] == "PERMISSION_DENIED"
            gone = await client.delete(url(device, scope, "site"), headers=headers)
            assert gone.status_code == 403
    for role in (Role.MANAGER, Role.ADMIN):
        client_scope = await client.put(
            url(device, "client"), json={"fw": "9.9"}, headers=tenant.headers(role)
        )
        assert client_scope.status_code == 403
        assert client_scope.json()["error"]["code"] == "CLIENT_SCOPE_READ_ONLY"

    everything = await client.get(url(device), headers=tenant.headers(Role.VIEWER))
    assert everything.status_code == 200
    assert everything.json() == {
        "device_id": str(device),
        "server": {"site": "north", "floor": 3},
        "shared": {"interval": 30},
        "client": {},
        "shared_version": 1,
        "desired_vs_reported": [
            {"key": "interval", "desired": 30, "reported": None, "in_sync": False}
        ],
    }
    one = await client.get(url(device, "server"), headers=tenant.headers(Role.VIEWER))
    assert [a["key"] for a in one.json()["attributes"]] == ["floor", "site"]
    assert (await client.get(url(device, "galaxy"), headers=tenant.headers())).status_code == 422
    assert await stored(db, device) == 3


async def test_shared_version_moves_only_on_change(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device, _ = await make_device(db, tenant.org_id)

    async def shared() -> dict[str, Any]:
        response = await client.get(url(device, "shared"), headers=tenant.headers(Role.VIEWER))
        body: dict[str, Any] = response.json()
        return body

    assert (await shared())["version"] == 0
    await put(client, tenant, device, "shared", {"mode": "eco", "limits": {"max": 5}})
    assert (await shared())["version"] == 1
    same = await put(client, tenant, device, "shared", {"limits": {"max": 5}, "mode": "eco"})
    assert same.json()["version"] == 1
    await put(client, tenant, device, "shared", {"missing": None})  # deleting nothing
    assert (await shared())["version"] == 1
    # 1 and true are different JSON values, even though Python says 1 == True.
    await put(client, tenant, device, "shared", {"flag": 1})
    await put(client, tenant, device, "shared", {"flag": True, "mode": "eco"})
    state = await shared()
    assert state["version"] == 3
    versions = {a["key"]: a["version"] for a in state["attributes"]}
    assert versions == {"flag": 3, "limits": 1, "mode": 1}
    assert state["values"]["flag"] is True

    await put(client, tenant, device, "server", {"note": "server scope has its own counter"})
    deleted = await put(client, tenant, device, "shared", {"mode": None})
    assert deleted.json()["version"] == 4
    assert set(deleted.json()["values"]) == {"flag", "limits"}
    removed = await client.delete(
        url(device, "shared", "flag"), headers=tenant.headers(Role.MANAGER)
    )
    assert removed.status_code == 204
    missing = await client.delete(
        url(device, "shared", "flag"), headers=tenant.headers(Role.MANAGER)
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ATTRIBUTE_NOT_FOUND"
    full = (await client.get(url(device), headers=tenant.headers(Role.VIEWER))).json()
    assert full["shared_version"] == 5
    assert full["shared"] == {"limits": {"max": 5}}

    audit = await client.get(
        "/api/v1/audit", params={"target_id": str(device)}, headers=tenant.headers(Role.ADMIN)
    )
    actions = [(e["action"], e["details"]["scope"]) for e in audit.json()["items"]]
    assert actions == [
        ("attributes.delete", "shared"),
        ("attributes.update", "shared"),
        ("attributes.update", "server"),
        ("attributes.update", "shared"),
        ("attributes.update", "shared"),
        ("attributes.update", "shared"),
    ]


async def test_device_reports_and_desired_vs_reported(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device, token = await make_device(db, tenant.org_id)
    await put(client, tenant, device, "shared", {"interval": 30, "mode": "eco", "leds": [1, 2]})

    reported = await client.post(
        ME, json={"interval": 30, "mode": "turbo", "fw": "1.2.0"}, headers={"X-Device-Token": token}
    )
    assert reported.status_code == 200, reported.text
    assert reported.json()["scope"] == "client"
    assert reported.json()["version"] == 1
    assert reported.json()["values"] == {"fw": "1.2.0", "interval": 30, "mode": "turbo"}

    view = (await client.get(url(device), headers=tenant.headers(Role.VIEWER))).json()
    assert view["client"] == {"interval": 30, "mode": "turbo", "fw": "1.2.0"}
    assert view["desired_vs_reported"] == [
        {"key": "interval", "desired": 30, "reported": 30, "in_sync": True},
        {"key": "leds", "desired": [1, 2], "reported": None, "in_sync": False},
        {"key": "mode", "desired": "eco", "reported": "turbo", "in_sync": False},
    ]

    bearer = {"Authorization": f"Bearer {token}"}
    desired = await client.get(ME, headers=bearer)
    assert desired.json() == {
        "device_id": str(device),
        "shared": {"interval": 30, "leds": [1, 2], "mode": "eco"},
        "shared_version": 1,
    }
    caught_up = await client.post(
        ME, json={"mode": "eco", "leds": [1, 2], "fw": None}, headers=bearer
    )
    assert caught_up.json()["version"] == 2
    again = await client.post(ME, json={"mode": "eco"}, headers=bearer)
    assert again.json()["version"] == 2
    view = (await client.get(url(device), headers=tenant.headers(Role.VIEWER))).json()
    assert all(entry["in_sync"] for entry in view["desired_vs_reported"])
    assert view["client"] == {"interval": 30, "leds": [1, 2], "mode": "eco"}
    assert view["shared_version"] == 1

    audit = await client.get(
        "/api/v1/audit",
        params={"target_id": str(device), "actor_id": str(device)},
        headers=tenant.headers(Role.ADMIN),
    )
    events = audit.json()["items"]
    assert [(e["actor_type"], e["details"]["scope"]) for e in events] == [("device", "client")] * 2


async def test_bad_device_tokens_are_401(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device, token = await make_device(db, tenant.org_id)
    disabled, disabled_token = await make_device(db, tenant.org_id, status="disabled")
    deleted, deleted_token = await make_device(db, tenant.org_id, deleted=True)
    revoked, revoked_token = await make_device(db, tenant.org_id)
    async with db.session() as session:
        credential = await session.scalar(
            select(DeviceCredential).where(DeviceCredential.device_id == revoked)
        )
        assert credential is not None
        credential.revoked_at = utcnow()
        await session.commit()

    user_token = tenant.tokens[Role.ADMIN]
    missing = await client.post(ME, json={"fw": "evil"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "DEVICE_TOKEN_REQUIRED"
    for headers in (
        {"X-Device-Token": "not-a-token"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {user_token}"},  # a user's token is not a device's
        {"X-Device-Token": disabled_token},
        {"X-Device-Token": deleted_token},
        {"X-Device-Token": revoked_token},
    ):
        response = await client.post(ME, json={"fw": "evil"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"
        assert (await client.get(ME, headers=headers)).status_code == 401
    for device_id in (device, disabled, deleted, revoked):
        assert await stored(db, device_id) == 0
    # A device token does not open user routes.
    assert (await client.get(url(device), headers={"X-Device-Token": token})).status_code == 401


async def test_limits_name_the_key_and_write_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device, token = await make_device(db, tenant.org_id)
    await put(client, tenant, device, "shared", {"keep": 1})
    longest = "k" * 128
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"ok": 1, "bad key": 1}, "bad key", "ATTRIBUTE_KEY_INVALID"),
        ({"k" * 129: 1}, "k" * 129, "ATTRIBUTE_KEY_INVALID"),
        ({"": 1}, "", "ATTRIBUTE_KEY_INVALID"),
        ({"newline\n": 1}, "newline\n", "ATTRIBUTE_KEY_INVALID"),
        ({"ok": 1, "blob": "x" * 8200}, "blob", "ATTRIBUTE_VALUE_TOO_LARGE"),
        ({f"k{i}": i for i in range(500)}, "k499", "TOO_MANY_ATTRIBUTES"),  # 1 + 500
    ]
    for body, key, code in cases:
        response = await put(client, tenant, device, "shared", body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["details"]["key"] == key
        assert repr(key) in error["message"]
    nan = await client.put(
        url(device, "shared"),
        content=b'{"temp": NaN}',
        headers=tenant.headers(Role.MANAGER) | {"Content-Type": "application/json"},
    )
    assert nan.status_code == 422
    assert nan.json()["error"]["details"]["key"] == "temp"
    not_object = await put(client, tenant, device, "shared", [1, 2])
    assert not_object.status_code == 422
    device_side = await client.post(ME, json={"x y": 1}, headers={"X-Device-Token": token})
    assert device_side.status_code == 422
    assert device_side.json()["error"]["details"]["key"] == "x y"

    state = (await client.get(url(device), headers=tenant.headers(Role.VIEWER))).json()
    assert state["shared"] == {"keep": 1}
    assert state["client"] == {}
    assert state["shared_version"] == 1

    # At the limits exactly: fine. Replacing keys while deleting others counts the result.
    edge = {longest: "x" * 8000} | {f"k{i}": i for i in range(498)}
    assert (await put(client, tenant, device, "shared", edge)).status_code == 200
    swap = {"keep": None, "k0": None, "n1": 1, "n2": 2}
    swapped = await put(client, tenant, device, "shared", swap)
    assert swapped.status_code == 200, swapped.text
    assert len(swapped.json()["values"]) == 500
    assert await stored(db, device) == 500


async def test_other_org_gets_404_on_every_attribute_route(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    device, _ = await make_device(db, tenant.org_id)
    gone, _ = await make_device(db, tenant.org_id, deleted=True)
    await put(client, tenant, device, "shared", {"mode": "eco"})
    intruder = other_tenant.headers(Role.ADMIN)
    attempts: list[tuple[str, str, Any]] = [
        ("GET", url(device), None),
        ("GET", url(device, "shared"), None),
        ("PUT", url(device, "shared"), {"mode": "off"}),
        ("PUT", url(device, "server"), {"x": 1}),
        ("DELETE", url(device, "shared", "mode"), None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=intruder)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "DEVICE_NOT_FOUND"
        # A soft-deleted device of one's own organization is gone too.
        own = await client.request(
            method, path.replace(str(device), str(gone)), json=body, headers=tenant.headers()
        )
        assert own.status_code == 404
    state = (await client.get(url(device), headers=tenant.headers(Role.VIEWER))).json()
    assert state["shared"] == {"mode": "eco"}
    assert state["server"] == {}
    assert state["shared_version"] == 1
