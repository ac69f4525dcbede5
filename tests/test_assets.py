"""Assets: the tree, moves without cycles, devices under a node, deletion rules, tenancy."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select

from fleetcore.assets.models import Asset
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.devices.models import Device
from tests.support.tenants import Tenant

ASSETS = "/api/v1/assets"


async def make_asset(
    client: httpx.AsyncClient,
    tenant: Tenant,
    name: str,
    type: str = "site",
    parent_id: str | None = None,
) -> dict[str, Any]:
    """Create an asset through the API as a manager."""
    response = await client.post(
        ASSETS,
        json={"name": name, "type": type, "parent_id": parent_id},
        headers=tenant.headers(Role.MANAGER),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def make_device(
    db: Database,
    org_id: uuid.UUID,
    name: str,
    *,
    asset_id: str | None = None,
    deleted: bool = False,
) -> uuid.UUID:
    """Insert a device with the ORM (the devices API is built separately)."""
    async with db.session() as session:
        device = Device(
            organization_id=org_id,
            name=name,
            serial_number=f"SN-{uuid.uuid4().hex[:10]}",
            asset_id=uuid.UUID(asset_id) if asset_id else None,
            deleted_at=utcnow() if deleted else None,
        )
        session.add(device)
        await session.commit()
        return device.id


async def device_asset(db: Database, device_id: uuid.UUID) -> uuid.UUID | None:
    async with db.session() as session:
        return await session.scalar(select(Device.asset_id).where(Device.id == device_id))


async def asset_parent(db: Database, asset_id: str) -> uuid.UUID | None:
    async with db.session() as session:
        asset = await session.get(Asset, uuid.UUID(asset_id))
        assert asset is not None
        return asset.parent_id


def _shape(nodes: list[dict[str, Any]]) -> list[Any]:
    return [(n["name"], n["type"], _shape(n["children"])) for n in nodes]


async def test_create_read_list_and_tree(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    plant = await make_asset(client, tenant, "Plant B")
    hall = await make_asset(client, tenant, "Hall 1", "area", plant["id"])
    line = await make_asset(client, tenant, "Line 7", "line", hall["id"])
    await make_asset(client, tenant, "Press", "machine", line["id"])
    await make_asset(client, tenant, "Lathe", "machine", line["id"])
    await make_asset(client, tenant, "Plant A")
    await make_asset(client, other_tenant, "Foreign site")

    viewer = tenant.headers(Role.VIEWER)
    response = await client.get(f"{ASSETS}/tree", headers=viewer)
    assert response.status_code == 200, response.text
    assert _shape(response.json()) == [
        ("Plant A", "site", []),
        (
            "Plant B",
            "site",
            [
                (
                    "Hall 1",
                    "area",
                    [("Line 7", "line", [("Lathe", "machine", []), ("Press", "machine", [])])],
                )
            ],
        ),
    ]

    one = await client.get(f"{ASSETS}/{line['id']}", headers=viewer)
    assert one.status_code == 200
    assert one.json()["parent_id"] == hall["id"]
    assert one.json()["type"] == "line"

    names: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(ASSETS, params=params, headers=viewer)).json()
        names += [a["name"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["Hall 1", "Lathe", "Line 7", "Plant A", "Plant B", "Press"]

    machines = await client.get(ASSETS, params={"type": "machine"}, headers=viewer)
    assert [a["name"] for a in machines.json()["items"]] == ["Lathe", "Press"]
    children = await client.get(ASSETS, params={"parent_id": plant["id"]}, headers=viewer)
    assert [a["name"] for a in children.json()["items"]] == ["Hall 1"]

    foreign = await client.get(f"{ASSETS}/tree", headers=other_tenant.headers(Role.VIEWER))
    assert _shape(foreign.json()) == [("Foreign site", "site", [])]


async def test_bad_input_is_422_not_500(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = tenant.headers(Role.MANAGER)
    for body in (
        {"name": "x", "type": "galaxy"},
        {"name": "", "type": "site"},
        {"name": "nul\x00name", "type": "site"},
        {"name": "x", "type": "site", "parent_id": "not-a-uuid"},
    ):
        response = await client.post(ASSETS, json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
    nan = await client.post(
        ASSETS,
        content=b'{"name": "x", "type": "site", "properties": {"t": NaN}}',
        headers=headers | {"Content-Type": "application/json"},
    )
    assert nan.status_code == 422, nan.text
    assert (await client.get(ASSETS, headers=headers)).json()["items"] == []


async def test_parent_must_be_in_the_same_org(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    foreign = await make_asset(client, other_tenant, "Foreign site")
    response = await client.post(
        ASSETS,
        json={"name": "Hall", "type": "area", "parent_id": foreign["id"]},
        headers=tenant.headers(Role.MANAGER),
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ASSET_NOT_FOUND"
    mine = await make_asset(client, tenant, "Site")
    moved = await client.patch(
        f"{ASSETS}/{mine['id']}",
        json={"parent_id": foreign["id"]},
        headers=tenant.headers(Role.MANAGER),
    )
    assert moved.status_code == 404
    listed = await client.get(ASSETS, headers=tenant.headers(Role.VIEWER))
    assert [a["name"] for a in listed.json()["items"]] == ["Site"]
    assert listed.json()["items"][0]["parent_id"] is None


async def test_moves_refuse_cycles(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    headers = tenant.headers(Role.MANAGER)
    a = await make_asset(client, tenant, "A")
    b = await make_asset(client, tenant, "B", "area", a["id"])
    c = await make_asset(client, tenant, "C", "line", b["id"])

    for target in (c["id"], b["id"], a["id"]):
        response = await client.patch(
            f"{ASSETS}/{a['id']}", json={"parent_id": target}, headers=headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "ASSET_CYCLE"
    assert await asset_parent(db, a["id"]) is None
    tree = (await client.get(f"{ASSETS}/tree", headers=headers)).json()
    assert _shape(tree) == [("A", "site", [("B", "area", [("C", "line", [])])])]

    # C to the root, then A under C: legal now, and the tree follows.
    to_root = await client.patch(f"{ASSETS}/{c['id']}", json={"parent_id": None}, headers=headers)
    assert to_root.status_code == 200
    assert to_root.json()["parent_id"] is None
    moved = await client.patch(
        f"{ASSETS}/{a['id']}", json={"parent_id": c["id"], "name": "A2"}, headers=headers
    )
    assert moved.status_code == 200, moved.text
    tree = (await client.get(f"{ASSETS}/tree", headers=headers)).json()
    assert _shape(tree) == [("C", "line", [("A2", "site", [("B", "area", [])])])]
    # A PATCH that omits parent_id leaves it alone.
    renamed = await client.patch(f"{ASSETS}/{b['id']}", json={"name": "B2"}, headers=headers)
    assert renamed.json()["parent_id"] == a["id"]


async def test_devices_under_an_asset_recursively(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    site = await make_asset(client, tenant, "Site")
    area = await make_asset(client, tenant, "Area", "area", site["id"])
    line = await make_asset(client, tenant, "Line", "line", area["id"])
    elsewhere = await make_asset(client, tenant, "Other site")
    expected = {
        await make_device(db, tenant.org_id, "s1", asset_id=site["id"]),
        await make_device(db, tenant.org_id, "a1", asset_id=area["id"]),
        await make_device(db, tenant.org_id, "a2", asset_id=area["id"]),
        await make_device(db, tenant.org_id, "l1", asset_id=line["id"]),
        await make_device(db, tenant.org_id, "l2", asset_id=line["id"]),
    }
    await make_device(db, tenant.org_id, "gone", asset_id=line["id"], deleted=True)
    await make_device(db, tenant.org_id, "o1", asset_id=elsewhere["id"])
    await make_device(db, tenant.org_id, "loose")

    async def walk(asset_id: str, recursive: bool) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"recursive": recursive, "limit": 2}
            if cursor:
                params["cursor"] = cursor
            response = await client.get(
                f"{ASSETS}/{asset_id}/devices", params=params, headers=tenant.headers(Role.VIEWER)
            )
            assert response.status_code == 200, response.text
            page = response.json()
            assert len(page["items"]) <= 2
            ids += [d["id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return ids

    everything = await walk(site["id"], True)
    assert len(everything) == len(set(everything)) == 5
    assert set(everything) == {str(d) for d in expected}
    assert len(await walk(area["id"], True)) == 4
    assert len(await walk(line["id"], True)) == 2
    assert len(await walk(site["id"], False)) == 1
    assert len(await walk(area["id"], False)) == 2

    foreign = await client.get(
        f"{ASSETS}/{site['id']}/devices",
        params={"recursive": True},
        headers=other_tenant.headers(Role.ADMIN),
    )
    assert foreign.status_code == 404


async def test_attach_and_detach(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    headers = tenant.headers(Role.MANAGER)
    site = await make_asset(client, tenant, "Site")
    line = await make_asset(client, tenant, "Line", "line", site["id"])
    device = await make_device(db, tenant.org_id, "pump")
    foreign_device = await make_device(db, other_tenant.org_id, "theirs")
    gone = await make_device(db, tenant.org_id, "gone", deleted=True)

    attached = await client.put(f"{ASSETS}/{site['id']}/devices/{device}", headers=headers)
    assert attached.status_code == 200, attached.text
    assert attached.json()["asset_id"] == site["id"]
    assert await device_asset(db, device) == uuid.UUID(site["id"])

    moved = await client.put(f"{ASSETS}/{line['id']}/devices/{device}", headers=headers)
    assert moved.json()["asset_id"] == line["id"]
    assert await device_asset(db, device) == uuid.UUID(line["id"])

    for device_id in (foreign_device, gone, uuid.uuid4()):
        refused = await client.put(f"{ASSETS}/{site['id']}/devices/{device_id}", headers=headers)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "DEVICE_NOT_FOUND"
    assert await device_asset(db, foreign_device) is None

    viewer = await client.delete(
        f"{ASSETS}/{line['id']}/devices/{device}", headers=tenant.headers(Role.VIEWER)
    )
    assert viewer.status_code == 403
    # Detaching from an asset it is not attached to leaves it where it is.
    other = await client.delete(f"{ASSETS}/{site['id']}/devices/{device}", headers=headers)
    assert other.status_code == 204
    assert await device_asset(db, device) == uuid.UUID(line["id"])
    detached = await client.delete(f"{ASSETS}/{line['id']}/devices/{device}", headers=headers)
    assert detached.status_code == 204
    assert await device_asset(db, device) is None

    audit = await client.get(
        "/api/v1/audit", params={"target_id": line["id"]}, headers=tenant.headers(Role.ADMIN)
    )
    actions = [e["action"] for e in audit.json()["items"]]
    assert actions == ["asset.detach_device", "asset.attach_device", "asset.create"]


async def test_delete_only_empty_assets(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    headers = tenant.headers(Role.MANAGER)
    site = await make_asset(client, tenant, "Site")
    area = await make_asset(client, tenant, "Area", "area", site["id"])
    device = await make_device(db, tenant.org_id, "d", asset_id=area["id"])
    await make_device(db, tenant.org_id, "deleted one", asset_id=site["id"], deleted=True)

    for asset in (site, area):
        refused = await client.delete(f"{ASSETS}/{asset['id']}", headers=headers)
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "ASSET_NOT_EMPTY"
    assert (await client.get(f"{ASSETS}/{site['id']}", headers=headers)).status_code == 200
    assert await device_asset(db, device) == uuid.UUID(area["id"])

    assert (
        await client.delete(f"{ASSETS}/{area['id']}", headers=tenant.headers(Role.VIEWER))
    ).status_code == 403
    await client.delete(f"{ASSETS}/{area['id']}/devices/{device}", headers=headers)
    assert (await client.delete(f"{ASSETS}/{area['id']}", headers=headers)).status_code == 204
    # A soft-deleted device does not keep its asset alive.
    assert (await client.delete(f"{ASSETS}/{site['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{ASSETS}/{site['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"{ASSETS}/tree", headers=headers)).json() == []


async def test_viewer_reads_but_cannot_write(client: httpx.AsyncClient, tenant: Tenant) -> None:
    site = await make_asset(client, tenant, "Site")
    for role in (Role.VIEWER, Role.OPERATOR):
        headers = tenant.headers(role)
        created = await client.post(ASSETS, json={"name": "X", "type": "site"}, headers=headers)
        assert created.status_code == 403
        assert created.json()["error"]["code"] == "PERMISSION_DENIED"
        patched = await client.patch(f"{ASSETS}/{site['id']}", json={"name": "Y"}, headers=headers)
        assert patched.status_code == 403
        assert (await client.get(f"{ASSETS}/{site['id']}", headers=headers)).json()[
            "name"
        ] == "Site"
    listed = await client.get(ASSETS, headers=tenant.headers(Role.VIEWER))
    assert [a["name"] for a in listed.json()["items"]] == ["Site"]


async def test_other_org_gets_404_on_every_asset_route(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    site = await make_asset(client, tenant, "Site")
    child = await make_asset(client, tenant, "Area", "area", site["id"])
    device = await make_device(db, tenant.org_id, "d", asset_id=site["id"])
    theirs = await make_asset(client, other_tenant, "Theirs")
    their_device = await make_device(db, other_tenant.org_id, "t")
    intruder = other_tenant.headers(Role.ADMIN)
    url = f"{ASSETS}/{site['id']}"
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", url, None),
        ("PATCH", url, {"name": "pwned"}),
        ("PATCH", f"{ASSETS}/{theirs['id']}", {"parent_id": site["id"]}),
        ("DELETE", f"{ASSETS}/{child['id']}", None),
        ("GET", f"{url}/devices?recursive=true", None),
        ("PUT", f"{url}/devices/{their_device}", None),
        ("PUT", f"{ASSETS}/{theirs['id']}/devices/{device}", None),
        ("DELETE", f"{url}/devices/{device}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=intruder)
        assert response.status_code == 404, (method, path, response.text)
    mine = (await client.get(url, headers=tenant.headers(Role.VIEWER))).json()
    assert mine["name"] == "Site"
    assert (
        await client.get(f"{ASSETS}/{child['id']}", headers=tenant.headers())
    ).status_code == 200
    assert await device_asset(db, device) == uuid.UUID(site["id"])
    assert await device_asset(db, their_device) is None
    assert await asset_parent(db, theirs["id"]) is None


RELATIONS = "/api/v1/relations"


async def test_relations_crud(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> None:
    headers = tenant.headers(Role.MANAGER)
    line = await make_asset(client, tenant, "Line", "line")
    tank = await make_asset(client, tenant, "Tank", "machine")
    sensor = str(await make_device(db, tenant.org_id, "sensor"))
    feeds = {"from_type": "asset", "from_id": tank["id"], "to_type": "asset", "to_id": line["id"]}
    monitors = {"from_type": "device", "from_id": sensor, "to_type": "asset", "to_id": tank["id"]}

    created = await client.post(RELATIONS, json=feeds | {"type": "feeds"}, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json() | {"id": None, "created_at": None} == feeds | {
        "type": "feeds",
        "id": None,
        "created_at": None,
    }
    watch = await client.post(RELATIONS, json=monitors | {"type": "monitors"}, headers=headers)
    assert watch.status_code == 201
    # Same ends, another type: a different relation.
    also = await client.post(RELATIONS, json=feeds | {"type": "contains"}, headers=headers)
    assert also.status_code == 201

    duplicate = await client.post(RELATIONS, json=feeds | {"type": "feeds"}, headers=headers)
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "RELATION_EXISTS"
    assert duplicate.json()["error"]["details"]["relation_id"] == created.json()["id"]

    viewer = tenant.headers(Role.VIEWER)

    async def listed(**params: Any) -> list[str]:
        response = await client.get(RELATIONS, params=params, headers=viewer)
        assert response.status_code == 200, response.text
        return sorted(r["type"] for r in response.json()["items"])

    assert await listed() == ["contains", "feeds", "monitors"]
    tank_ref = {"entity_type": "asset", "entity_id": tank["id"]}
    assert await listed(**tank_ref) == ["contains", "feeds", "monitors"]
    assert await listed(**tank_ref, direction="from") == ["contains", "feeds"]
    assert await listed(**tank_ref, direction="to") == ["monitors"]
    assert await listed(**tank_ref, type="feeds") == ["feeds"]
    assert await listed(entity_type="device", entity_id=sensor) == ["monitors"]
    assert await listed(entity_type="asset", entity_id=line["id"], direction="from") == []
    page = (await client.get(RELATIONS, params={"limit": 2}, headers=viewer)).json()
    rest = await client.get(RELATIONS, params={"cursor": page["next_cursor"]}, headers=viewer)
    assert len(page["items"]) == 2
    assert len(rest.json()["items"]) == 1
    assert rest.json()["next_cursor"] is None

    incomplete = await client.get(RELATIONS, params={"entity_type": "asset"}, headers=viewer)
    assert incomplete.status_code == 422
    self_loop = {"from_type": "asset", "from_id": tank["id"], "to_type": "asset"}
    looped = await client.post(
        RELATIONS, json=self_loop | {"to_id": tank["id"], "type": "x"}, headers=headers
    )
    assert looped.status_code == 422
    bad_type = await client.post(RELATIONS, json=feeds | {"type": "has spaces"}, headers=headers)
    assert bad_type.status_code == 422

    denied = await client.delete(f"{RELATIONS}/{created.json()['id']}", headers=viewer)
    assert denied.status_code == 403
    deleted = await client.delete(f"{RELATIONS}/{created.json()['id']}", headers=headers)
    assert deleted.status_code == 204
    assert await listed() == ["contains", "monitors"]
    again = await client.delete(f"{RELATIONS}/{created.json()['id']}", headers=headers)
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "RELATION_NOT_FOUND"

    # Deleting an asset removes the relations that name it.
    await client.delete(f"{RELATIONS}/{also.json()['id']}", headers=headers)
    assert (await client.delete(f"{ASSETS}/{tank['id']}", headers=headers)).status_code == 204
    assert await listed() == []

    audit = await client.get(
        "/api/v1/audit", params={"target_type": "relation"}, headers=tenant.headers(Role.ADMIN)
    )
    actions = sorted(e["action"] for e in audit.json()["items"])
    assert actions == ["relation.create"] * 3 + ["relation.delete"] * 2


async def test_relations_stay_inside_the_org(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    headers = tenant.headers(Role.MANAGER)
    mine = await make_asset(client, tenant, "Mine")
    my_device = str(await make_device(db, tenant.org_id, "d"))
    theirs = await make_asset(client, other_tenant, "Theirs")
    their_device = str(await make_device(db, other_tenant.org_id, "t"))
    deleted = str(await make_device(db, tenant.org_id, "gone", deleted=True))
    ends = [
        ("asset", mine["id"], "asset", theirs["id"], "ASSET_NOT_FOUND"),
        ("asset", theirs["id"], "asset", mine["id"], "ASSET_NOT_FOUND"),
        ("asset", mine["id"], "device", their_device, "DEVICE_NOT_FOUND"),
        ("device", deleted, "asset", mine["id"], "DEVICE_NOT_FOUND"),
        ("device", my_device, "asset", my_device, "ASSET_NOT_FOUND"),  # wrong type for the id
    ]
    for from_type, from_id, to_type, to_id, code in ends:
        body = {"from_type": from_type, "from_id": from_id, "to_type": to_type, "to_id": to_id}
        response = await client.post(RELATIONS, json=body | {"type": "feeds"}, headers=headers)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == code
    assert (await client.get(RELATIONS, headers=headers)).json()["items"] == []

    body = {"from_type": "device", "from_id": my_device, "to_type": "asset", "to_id": mine["id"]}
    created = await client.post(RELATIONS, json=body | {"type": "in"}, headers=headers)
    relation_id = created.json()["id"]
    intruder = other_tenant.headers(Role.ADMIN)
    assert (await client.get(RELATIONS, headers=intruder)).json()["items"] == []
    by_entity = await client.get(
        RELATIONS, params={"entity_type": "asset", "entity_id": mine["id"]}, headers=intruder
    )
    assert by_entity.status_code == 404
    assert (await client.delete(f"{RELATIONS}/{relation_id}", headers=intruder)).status_code == 404
    assert [r["id"] for r in (await client.get(RELATIONS, headers=headers)).json()["items"]] == [
        relation_id
    ]


async def test_deleting_a_device_removes_its_relations(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = tenant.headers(Role.MANAGER)
    asset = (
        await client.post("/api/v1/assets", headers=headers, json={"name": "S", "type": "site"})
    ).json()
    device = (
        await client.post(
            "/api/v1/devices", headers=headers, json={"name": "d", "serial_number": "REL-DEL-1"}
        )
    ).json()
    relation = await client.post(
        "/api/v1/relations",
        headers=headers,
        json={
            "from_type": "asset",
            "from_id": asset["id"],
            "to_type": "device",
            "to_id": device["id"],
            "type": "contains",
        },
    )
    assert relation.status_code == 201
    assert (
        await client.delete(f"/api/v1/devices/{device['id']}", headers=headers)
    ).status_code == 204
    listed = await client.get(
        "/api/v1/relations",
        headers=headers,
        params={"entity_type": "asset", "entity_id": asset["id"]},
    )
    assert listed.status_code == 200
    assert listed.json()["items"] == []
