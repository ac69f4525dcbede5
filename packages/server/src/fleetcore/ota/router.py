"""OTA API: packages and keys, rollouts (users), and package downloads (devices).

Device routes: GET /api/v1/devices/me/ota/{kind} (device token header) and ThingsBoard's
GET /api/v1/{token}/firmware and /software (`thingsboard_router`, included last: its
{token} segment must not shadow other routes).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import Response

from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import body_limit
from fleetcore.config import OTA_MAX_PACKAGE_MB_CEILING
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.devices.deps import CurrentDevice, PathTokenDevice
from fleetcore.media.store import MediaStore
from fleetcore.ota import downloads, packages, rollouts
from fleetcore.ota.deps import HubDep, StoreDep
from fleetcore.ota.packages import FRAMING_BYTES, MIB
from fleetcore.ota.schemas import (
    KeyIn,
    KeyOut,
    Kind,
    PackageOut,
    RolloutDeviceOut,
    RolloutIn,
    RolloutOut,
)
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1", tags=["ota"])
thingsboard_router = APIRouter(prefix="/api/v1", tags=["ota"])


ChunkQuery = Annotated[int | None, Query(ge=0, le=10**9)]
SizeQuery = Annotated[int | None, Query(ge=1, le=downloads.HTTP_MAX_CHUNK)]
TextQuery = Annotated[str | None, Query(min_length=1, max_length=128)]

_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the package, or the chunk asked for",
    },
    206: {"description": "the requested byte range"},
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["title", "version", "kind", "file"],
                    "properties": {
                        "title": {"type": "string"},
                        "version": {"type": "string"},
                        "kind": {"type": "string", "enum": ["firmware", "software"]},
                        "profile_id": {"type": "string", "format": "uuid"},
                        "signature": {"type": "string", "description": "base64 Ed25519"},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            }
        },
    }
}


# -- keys ------------------------------------------------------------------------------


@router.post("/ota/keys", status_code=status.HTTP_201_CREATED, summary="Register a signing key")
async def add_key(body: KeyIn, session: SessionDep, principal: PrincipalDep) -> KeyOut:
    """An Ed25519 public key (PEM or raw base64); uploads must then be signed (admins)."""
    return KeyOut.model_validate(await packages.add_key(session, principal, body))


@router.get("/ota/keys", summary="The organization's signing keys")
async def list_keys(session: SessionDep, principal: PrincipalDep) -> list[KeyOut]:
    """Every registered key."""
    return [KeyOut.model_validate(k) for k in await packages.list_keys(session, principal)]


@router.delete(
    "/ota/keys/{ota_key_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a signing key",
)
async def delete_key(ota_key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> None:
    """Admins; packages it verified keep their signature."""
    await packages.delete_key(session, principal, ota_key_id)


# -- packages --------------------------------------------------------------------------


@router.post(
    "/ota/packages",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a firmware or software package",
    openapi_extra=_UPLOAD_BODY,
)
@body_limit(OTA_MAX_PACKAGE_MB_CEILING * MIB + FRAMING_BYTES)
async def upload_package(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    store: StoreDep,
) -> PackageOut:
    """Multipart: title, version, kind, optional profile_id and signature, and the file."""
    package = await packages.upload_package(
        request, session, principal, settings=settings, store=store
    )
    return PackageOut.model_validate(package)


@router.get("/ota/packages", summary="The organization's packages")
async def list_packages(
    session: SessionDep,
    principal: PrincipalDep,
    kind: Kind | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[PackageOut]:
    """Newest first."""
    rows, next_cursor = await packages.list_packages(
        session, principal, kind=kind, cursor=cursor, limit=limit
    )
    return Page(items=[PackageOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/ota/packages/{package_id:uuid}", summary="A package")
async def get_package(
    package_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> PackageOut:
    """Its size, checksum and signature."""
    return PackageOut.model_validate(await packages.get_package(session, principal, package_id))


@router.get(
    "/ota/packages/{package_id:uuid}/download",
    summary="Download a package",
    response_class=Response,
    responses=_FILE,
)
async def download_package(
    package_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    store: StoreDep,
) -> Response:
    """The file; Range supported."""
    package = await packages.get_package(session, principal, package_id)
    return await downloads.serve(request, package, store)


@router.delete(
    "/ota/packages/{package_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete"
)
async def delete_package(
    package_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> None:
    """409 while an active rollout uses it (managers)."""
    await packages.delete_package(session, principal, package_id, store)


# -- rollouts --------------------------------------------------------------------------


@router.post("/ota/rollouts", status_code=status.HTTP_201_CREATED, summary="Start a rollout")
async def create_rollout(
    body: RolloutIn, session: SessionDep, principal: PrincipalDep, hub: HubDep
) -> RolloutOut:
    """Assign a package to devices, all at once or in stages (managers)."""
    rollout = await rollouts.create_rollout(session, principal, body, hub)
    return await rollouts.describe(session, rollout)


@router.get("/ota/rollouts", summary="The organization's rollouts")
async def list_rollouts(
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[RolloutOut]:
    """Newest first, with counts."""
    rows, next_cursor = await rollouts.list_rollouts(session, principal, cursor=cursor, limit=limit)
    items = [await rollouts.describe(session, r) for r in rows]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/ota/rollouts/{rollout_id:uuid}", summary="A rollout with its counts")
async def get_rollout(
    rollout_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> RolloutOut:
    """Counts per state and per stage."""
    return await rollouts.get_rollout(session, principal, rollout_id)


@router.get("/ota/rollouts/{rollout_id:uuid}/devices", summary="A rollout's devices")
async def list_rollout_devices(
    rollout_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[RolloutDeviceOut]:
    """Each device's state and error, paged."""
    items, next_cursor = await rollouts.list_devices(
        session, principal, rollout_id, state=state, cursor=cursor, limit=limit
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post("/ota/rollouts/{rollout_id:uuid}/pause", summary="Pause a rollout")
async def pause_rollout(
    rollout_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, hub: HubDep
) -> RolloutOut:
    """No further stage starts (operators)."""
    return await rollouts.pause(session, principal, rollout_id, hub)


@router.post("/ota/rollouts/{rollout_id:uuid}/resume", summary="Resume a rollout")
async def resume_rollout(
    rollout_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, hub: HubDep
) -> RolloutOut:
    """Stages go on (operators)."""
    return await rollouts.resume(session, principal, rollout_id, hub)


@router.post("/ota/rollouts/{rollout_id:uuid}/abort", summary="Abort a rollout")
async def abort_rollout(
    rollout_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, hub: HubDep
) -> RolloutOut:
    """Devices not updated get back what they had (managers)."""
    return await rollouts.abort(session, principal, rollout_id, hub)


@router.post("/ota/rollouts/{rollout_id:uuid}/rollback", summary="Roll a rollout back")
async def rollback_rollout(
    rollout_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, hub: HubDep
) -> RolloutOut:
    """Every device it reached is assigned its previous version (managers)."""
    return await rollouts.rollback(session, principal, rollout_id, hub)


# -- device downloads ------------------------------------------------------------------


@router.get(
    "/devices/me/ota/{kind}",
    summary="Download the assigned package (device token)",
    response_class=Response,
    responses=_FILE,
)
async def device_download(
    kind: Kind,
    request: Request,
    session: SessionDep,
    device: CurrentDevice,
    store: StoreDep,
    title: TextQuery = None,
    version: TextQuery = None,
    chunk: ChunkQuery = None,
    size: SizeQuery = None,
) -> Response:
    """With size: bytes [chunk*size, (chunk+1)*size). Without: the file (Range supported)."""
    package = await downloads.device_package(
        session, device.id, device.organization_id, kind, title=title, version=version
    )
    return await downloads.serve(request, package, store, chunk=chunk, size=size)


async def _thingsboard(
    kind: str,
    request: Request,
    session: SessionDep,
    device: PathTokenDevice,
    store: MediaStore,
    title: str | None,
    version: str | None,
    chunk: int | None,
    size: int | None,
) -> Response:
    package = await downloads.device_package(
        session, device.id, device.organization_id, kind, title=title, version=version
    )
    return await downloads.serve(request, package, store, chunk=chunk, size=size)


@thingsboard_router.get(
    "/{token}/firmware",
    summary="ThingsBoard: download the assigned firmware",
    response_class=Response,
    responses=_FILE,
)
async def thingsboard_firmware(
    request: Request,
    session: SessionDep,
    device: PathTokenDevice,
    store: StoreDep,
    title: TextQuery = None,
    version: TextQuery = None,
    chunk: ChunkQuery = None,
    size: SizeQuery = None,
) -> Response:
    """As /api/v1/devices/me/ota/firmware, the token in the path."""
    return await _thingsboard(
        "firmware", request, session, device, store, title, version, chunk, size
    )


@thingsboard_router.get(
    "/{token}/software",
    summary="ThingsBoard: download the assigned software",
    response_class=Response,
    responses=_FILE,
)
async def thingsboard_software(
    request: Request,
    session: SessionDep,
    device: PathTokenDevice,
    store: StoreDep,
    title: TextQuery = None,
    version: TextQuery = None,
    chunk: ChunkQuery = None,
    size: SizeQuery = None,
) -> Response:
    """As /api/v1/devices/me/ota/software, the token in the path."""
    return await _thingsboard(
        "software", request, session, device, store, title, version, chunk, size
    )
