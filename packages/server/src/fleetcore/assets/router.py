"""The assets and relations API under /api/v1."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from fleetcore.assets import relations, service
from fleetcore.assets.schemas import (
    AssetDeviceOut,
    AssetIn,
    AssetNode,
    AssetOut,
    AssetPatch,
    AssetType,
    Direction,
    EntityType,
    RelationIn,
    RelationOut,
)
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page, page_of

router = APIRouter(prefix="/api/v1", tags=["assets"])

RelationTypeQuery = Annotated[
    str | None, Query(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]


@router.post("/assets", status_code=status.HTTP_201_CREATED, summary="Create an asset")
async def create_asset(body: AssetIn, session: SessionDep, principal: PrincipalDep) -> AssetOut:
    """A root, or a child of an asset of the organization (managers)."""
    return AssetOut.model_validate(await service.create_asset(session, principal, data=body))


@router.get("/assets", summary="List assets")
async def list_assets(
    session: SessionDep,
    principal: PrincipalDep,
    type: AssetType | None = None,
    parent_id: uuid.UUID | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[AssetOut]:
    """The organization's assets by name, optionally of one type or under one parent."""
    rows = await service.list_assets(
        session, principal, type=type, parent_id=parent_id, cursor=cursor, limit=limit
    )
    items, next_cursor = page_of(rows, limit=limit, sort_attr="name")
    return Page(items=[AssetOut.model_validate(a) for a in items], next_cursor=next_cursor)


@router.get("/assets/tree", summary="The asset tree")
async def asset_tree(session: SessionDep, principal: PrincipalDep) -> list[AssetNode]:
    """Root assets with their children, nested, by name."""
    return await service.asset_tree(session, principal)


@router.get("/assets/{asset_id:uuid}", summary="Get an asset")
async def get_asset(asset_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> AssetOut:
    """One asset of the organization."""
    return AssetOut.model_validate(await service.get_asset(session, principal, asset_id))


@router.patch("/assets/{asset_id:uuid}", summary="Change or move an asset")
async def update_asset(
    asset_id: uuid.UUID, body: AssetPatch, session: SessionDep, principal: PrincipalDep
) -> AssetOut:
    """Moving an asset under itself or its descendant is refused (422 ASSET_CYCLE)."""
    asset = await service.update_asset(session, principal, asset_id, data=body)
    return AssetOut.model_validate(asset)


@router.delete(
    "/assets/{asset_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an asset"
)
async def delete_asset(asset_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> None:
    """Only an empty asset: no children, no devices (409 ASSET_NOT_EMPTY)."""
    await service.delete_asset(session, principal, asset_id)


@router.get("/assets/{asset_id:uuid}/devices", summary="Devices under an asset")
async def list_asset_devices(
    asset_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    recursive: bool = False,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[AssetDeviceOut]:
    """Devices attached to the asset; with recursive=true, to any asset below it too."""
    rows = await service.list_asset_devices(
        session, principal, asset_id, recursive=recursive, cursor=cursor, limit=limit
    )
    items, next_cursor = page_of(rows, limit=limit, sort_attr="name")
    return Page(items=[AssetDeviceOut.model_validate(d) for d in items], next_cursor=next_cursor)


@router.put(
    "/assets/{asset_id:uuid}/devices/{device_id:uuid}", summary="Attach a device to an asset"
)
async def attach_device(
    asset_id: uuid.UUID, device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> AssetDeviceOut:
    """A device belongs to at most one asset; attaching moves it."""
    device = await service.attach_device(session, principal, asset_id, device_id)
    return AssetDeviceOut.model_validate(device)


@router.delete(
    "/assets/{asset_id:uuid}/devices/{device_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Detach a device from an asset",
)
async def detach_device(
    asset_id: uuid.UUID, device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Idempotent: a device not attached to this asset stays as it is."""
    await service.detach_device(session, principal, asset_id, device_id)


@router.post("/relations", status_code=status.HTTP_201_CREATED, summary="Create a relation")
async def create_relation(
    body: RelationIn, session: SessionDep, principal: PrincipalDep
) -> RelationOut:
    """Both ends must be in the organization (404); the same relation twice is 409."""
    return RelationOut.model_validate(
        await relations.create_relation(session, principal, data=body)
    )


@router.get("/relations", summary="List relations")
async def list_relations(
    session: SessionDep,
    principal: PrincipalDep,
    entity_type: EntityType | None = None,
    entity_id: uuid.UUID | None = None,
    direction: Direction = Direction.BOTH,
    type: RelationTypeQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[RelationOut]:
    """The organization's relations, or one entity's (from it, to it or both), oldest first."""
    rows = await relations.list_relations(
        session,
        principal,
        entity_type=entity_type,
        entity_id=entity_id,
        direction=direction,
        type=type,
        cursor=cursor,
        limit=limit,
    )
    items, next_cursor = page_of(rows, limit=limit, sort_attr="created_at")
    return Page(items=[RelationOut.model_validate(r) for r in items], next_cursor=next_cursor)


@router.delete(
    "/relations/{relation_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a relation",
)
async def delete_relation(
    relation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Managers."""
    await relations.delete_relation(session, principal, relation_id)
