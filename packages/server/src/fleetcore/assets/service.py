"""The asset tree: create, move (never into a cycle), delete when empty, devices under a node."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import CTE, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from fleetcore.advisory_locks import ASSET_MOVE_TAG
from fleetcore.assets import relations
from fleetcore.assets.models import Asset
from fleetcore.assets.schemas import AssetIn, AssetNode, AssetPatch, AssetType, EntityType
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.devices.models import Device
from fleetcore.devices.service import get_device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import paginate

# Tags the PostgreSQL advisory lock that serialises moves within one organization.
_MOVE_LOCK_TAG = ASSET_MOVE_TAG


async def _get(session: AsyncSession, principal: Principal, asset_id: uuid.UUID) -> Asset:
    asset = await session.scalar(
        select(Asset).where(Asset.id == asset_id, Asset.organization_id == principal.org_id)
    )
    if asset is None:
        raise NotFound("asset not found", code="ASSET_NOT_FOUND")
    return asset


async def _parent(session: AsyncSession, principal: Principal, parent_id: uuid.UUID) -> Asset:
    parent = await session.scalar(
        select(Asset).where(Asset.id == parent_id, Asset.organization_id == principal.org_id)
    )
    if parent is None:
        raise NotFound(
            "parent asset not found", code="ASSET_NOT_FOUND", details={"field": "parent_id"}
        )
    return parent


def subtree(org_id: uuid.UUID, asset_id: uuid.UUID) -> CTE:
    """Ids of an asset and all its descendants (UNION, not UNION ALL: ends even on a cycle)."""
    tree = (
        select(Asset.id)
        .where(Asset.id == asset_id, Asset.organization_id == org_id)
        .cte("subtree", recursive=True)
    )
    child = aliased(Asset)
    return tree.union(
        select(child.id).where(child.parent_id == tree.c.id, child.organization_id == org_id)
    )


async def create_asset(session: AsyncSession, principal: Principal, *, data: AssetIn) -> Asset:
    """A new asset, a root or under a parent of the caller's organization (managers)."""
    principal.require(Role.MANAGER)
    if data.parent_id is not None:
        await _parent(session, principal, data.parent_id)
    asset = Asset(
        organization_id=principal.org_id,
        parent_id=data.parent_id,
        name=data.name,
        type=data.type.value,
        description=data.description,
        properties=data.properties,
    )
    session.add(asset)
    await session.flush()
    audit.record(
        session,
        action="asset.create",
        actor=principal,
        organization_id=asset.organization_id,
        target_type="asset",
        target_id=asset.id,
        details={"name": asset.name, "type": asset.type, "parent_id": _str(asset.parent_id)},
    )
    await session.commit()
    return asset


async def get_asset(session: AsyncSession, principal: Principal, asset_id: uuid.UUID) -> Asset:
    """One asset of the caller's organization."""
    return await _get(session, principal, asset_id)


async def list_assets(
    session: AsyncSession,
    principal: Principal,
    *,
    type: AssetType | None,
    parent_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> list[Asset]:
    """Assets of the caller's organization by name (one extra row tells there are more)."""
    query = select(Asset).where(Asset.organization_id == principal.org_id)
    if type is not None:
        query = query.where(Asset.type == type.value)
    if parent_id is not None:
        query = query.where(Asset.parent_id == parent_id)
    query = paginate(query, sort=Asset.name, id_column=Asset.id, cursor=cursor, limit=limit)
    return list((await session.scalars(query)).all())


async def asset_tree(session: AsyncSession, principal: Principal) -> list[AssetNode]:
    """The organization's assets as nested roots, children by name."""
    rows = await session.scalars(
        select(Asset)
        .where(Asset.organization_id == principal.org_id)
        .order_by(Asset.name, Asset.id)
    )
    nodes = {
        a.id: AssetNode(id=a.id, parent_id=a.parent_id, name=a.name, type=AssetType(a.type))
        for a in rows
    }
    children: dict[uuid.UUID | None, list[AssetNode]] = defaultdict(list)
    for node in nodes.values():  # insertion order keeps the name order
        children[node.parent_id if node.parent_id in nodes else None].append(node)
    for node in nodes.values():
        node.children = children.get(node.id, [])
    return children.get(None, [])


async def update_asset(
    session: AsyncSession, principal: Principal, asset_id: uuid.UUID, *, data: AssetPatch
) -> Asset:
    """Rename, retype, describe or move an asset; a move under its own subtree is refused."""
    principal.require(Role.MANAGER)
    asset = await _get(session, principal, asset_id)
    changes: dict[str, Any] = {}
    for field in ("name", "description"):
        value = getattr(data, field)
        if value is not None and value != getattr(asset, field):
            changes[field] = [getattr(asset, field), value]
            setattr(asset, field, value)
    if data.type is not None and data.type.value != asset.type:
        changes["type"] = [asset.type, data.type.value]
        asset.type = data.type.value
    if data.properties is not None and data.properties != asset.properties:
        changes["properties"] = sorted(set(data.properties) | set(asset.properties))
        asset.properties = data.properties
    if "parent_id" in data.model_fields_set and data.parent_id != asset.parent_id:
        await _check_move(session, principal, asset, data.parent_id)
        changes["parent_id"] = [_str(asset.parent_id), _str(data.parent_id)]
        asset.parent_id = data.parent_id
    if changes:
        audit.record(
            session,
            action="asset.update",
            actor=principal,
            organization_id=asset.organization_id,
            target_type="asset",
            target_id=asset.id,
            details=changes,
        )
        await session.commit()
    return asset


async def _check_move(
    session: AsyncSession, principal: Principal, asset: Asset, parent_id: uuid.UUID | None
) -> None:
    if parent_id is None:
        return
    if session.get_bind().dialect.name == "postgresql":
        # Two concurrent moves (A under B, B under A) would each pass the check alone.
        key = int.from_bytes(asset.organization_id.bytes[:8], "big", signed=True) ^ _MOVE_LOCK_TAG
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    await _parent(session, principal, parent_id)
    tree = subtree(principal.org_id, asset.id)
    if await session.scalar(select(tree.c.id).where(tree.c.id == parent_id)):
        raise Invalid(
            "an asset cannot move under itself or its own descendant",
            code="ASSET_CYCLE",
            details={"field": "parent_id"},
        )


async def delete_asset(session: AsyncSession, principal: Principal, asset_id: uuid.UUID) -> None:
    """Delete an asset without children or devices, and the relations that name it."""
    principal.require(Role.MANAGER)
    asset = await _get(session, principal, asset_id)
    child = await session.scalar(select(Asset.id).where(Asset.parent_id == asset.id).limit(1))
    device = await session.scalar(
        select(Device.id).where(Device.asset_id == asset.id, Device.deleted_at.is_(None)).limit(1)
    )
    if child is not None or device is not None:
        raise Conflict(
            "the asset still has child assets or devices; move or detach them first",
            code="ASSET_NOT_EMPTY",
            details={"has_children": child is not None, "has_devices": device is not None},
        )
    await relations.delete_for_entity(
        session,
        organization_id=asset.organization_id,
        entity_type=EntityType.ASSET,
        entity_id=asset.id,
    )
    audit.record(
        session,
        action="asset.delete",
        actor=principal,
        organization_id=asset.organization_id,
        target_type="asset",
        target_id=asset.id,
        details={"name": asset.name, "type": asset.type},
    )
    await session.delete(asset)
    await session.commit()


async def list_asset_devices(
    session: AsyncSession,
    principal: Principal,
    asset_id: uuid.UUID,
    *,
    recursive: bool,
    cursor: str | None,
    limit: int,
) -> list[Device]:
    """Live devices attached to the asset (and, if recursive, to any descendant), by name."""
    asset = await _get(session, principal, asset_id)
    query = select(Device).where(
        Device.organization_id == principal.org_id, Device.deleted_at.is_(None)
    )
    if recursive:
        tree = subtree(principal.org_id, asset.id)
        query = query.where(Device.asset_id.in_(select(tree.c.id)))
    else:
        query = query.where(Device.asset_id == asset.id)
    query = paginate(query, sort=Device.name, id_column=Device.id, cursor=cursor, limit=limit)
    return list((await session.scalars(query)).all())


async def attach_device(
    session: AsyncSession, principal: Principal, asset_id: uuid.UUID, device_id: uuid.UUID
) -> Device:
    """Attach a device to an asset (moving it from any other asset)."""
    principal.require(Role.MANAGER)
    asset = await _get(session, principal, asset_id)
    device = await get_device(session, principal, device_id)
    if device.asset_id != asset.id:
        previous = device.asset_id
        device.asset_id = asset.id
        audit.record(
            session,
            action="asset.attach_device",
            actor=principal,
            organization_id=asset.organization_id,
            target_type="asset",
            target_id=asset.id,
            details={"device_id": str(device.id), "previous_asset_id": _str(previous)},
        )
        await session.commit()
    return device


async def detach_device(
    session: AsyncSession, principal: Principal, asset_id: uuid.UUID, device_id: uuid.UUID
) -> None:
    """Detach a device from this asset (nothing to do if it is not attached here)."""
    principal.require(Role.MANAGER)
    asset = await _get(session, principal, asset_id)
    device = await get_device(session, principal, device_id)
    if device.asset_id == asset.id:
        device.asset_id = None
        audit.record(
            session,
            action="asset.detach_device",
            actor=principal,
            organization_id=asset.organization_id,
            target_type="asset",
            target_id=asset.id,
            details={"device_id": str(device.id)},
        )
        await session.commit()


def _str(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)
