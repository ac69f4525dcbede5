"""Media API: a device's upload URLs, the upload itself, and what users read and manage.

Media are served to the users of the device's organization only (bearer JWT, API key or the
session cookie), or to whoever holds a signed link until it expires; never at a guessable
public address. The multipart event route is events/router.py's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response

from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import body_limit
from fleetcore.config import MEDIA_MAX_BYTES_CEILING
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.devices.deps import CurrentDevice
from fleetcore.media import service, serving, signing, uploads
from fleetcore.media.images import CONTENT_TYPES
from fleetcore.media.schemas import (
    DeviceUsageOut,
    LinkOut,
    MediaOut,
    MediaRemoved,
    MediaStored,
    RetentionIn,
    RetentionOut,
    UploadIn,
    UploadOut,
    UsageOut,
)
from fleetcore.media.store import MediaStore
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.web.errors import ErrorEnvelope

router = APIRouter(prefix="/api/v1", tags=["media"])


def get_store(request: Request) -> MediaStore:
    """The media store built at startup (fleetcore.app)."""
    store: MediaStore = request.app.state.media_store
    return store


StoreDep = Annotated[MediaStore, Depends(get_store)]

_FILE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES},
        "description": "the file",
    },
    206: {"description": "the requested byte range"},
    304: {"description": "not modified (If-None-Match)"},
    416: {"model": ErrorEnvelope, "description": "the range is outside the file"},
}
_PUT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in CONTENT_TYPES},
    }
}


def _absolute(request: Request, path: str) -> str:
    return str(request.base_url).rstrip("/") + path


@router.post(
    "/devices/me/media/uploads",
    status_code=status.HTTP_201_CREATED,
    summary="Ask for an upload URL (device token)",
)
async def create_upload(
    body: UploadIn,
    request: Request,
    session: SessionDep,
    device: CurrentDevice,
    settings: SettingsDep,
) -> UploadOut:
    """A signed, single-use URL to PUT the image to; then an event names media_id."""
    media, token = await uploads.create_upload(session, device, settings, body)
    assert media.expires_at is not None
    return UploadOut(
        media_id=media.id,
        upload_url=_absolute(request, signing.UPLOAD_PATH + token),
        expires_at=media.expires_at,
    )


@router.put(
    "/media/uploads/{token}",
    status_code=status.HTTP_201_CREATED,
    summary="Upload an image to an upload URL (the URL is the credential)",
    openapi_extra=_PUT_BODY,
)
@body_limit(MEDIA_MAX_BYTES_CEILING)
async def put_upload(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> MediaStored:
    """The raw bytes; checked as any image; the URL works once."""
    return await uploads.receive_upload(request, session, token, settings=settings, store=store)


@router.get("/media/usage", summary="The organization's stored media, by device")
async def get_usage(session: SessionDep, principal: PrincipalDep) -> UsageOut:
    """Bytes and files (thumbnails included) of stored media."""
    devices = await service.usage(session, principal)
    return UsageOut(
        bytes=sum(d.bytes for d in devices),
        files=sum(d.files for d in devices),
        devices=[
            DeviceUsageOut(device_id=d.device_id, bytes=d.bytes, files=d.files) for d in devices
        ],
    )


@router.get("/media/retention", summary="The organization's media retention (admins)")
async def get_retention(
    session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """The platform default (FLEETCORE_MEDIA_RETENTION_DAYS) until the organization sets one."""
    view = await service.get_retention(
        session, principal, default_days=settings.media_retention_days
    )
    return RetentionOut(days=view.days, is_default=view.is_default, updated_at=view.updated_at)


@router.put("/media/retention", summary="Set the organization's media retention (admins)")
async def put_retention(
    body: RetentionIn, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """Applies at the next housekeeping run; audited."""
    view = await service.set_retention(
        session, principal, days=body.days, default_days=settings.media_retention_days
    )
    return RetentionOut(days=view.days, is_default=view.is_default, updated_at=view.updated_at)


@router.get(
    "/media/signed/{token}",
    summary="A media by signed link (the link is the credential)",
    response_class=Response,
    responses=_FILE_RESPONSES,
)
async def get_signed(
    token: str, request: Request, session: SessionDep, settings: SettingsDep, store: StoreDep
) -> Response:
    """Valid until the link expires."""
    thumbnail = token.startswith("t.")
    grant = signing.verify(settings, token, "thumbnail" if thumbnail else "image")
    media = await service.get_ready(session, grant.media_id)
    left = max(0, grant.expires_at - int(datetime.now(UTC).timestamp()))
    return await serving.serve(
        request,
        media,
        store,
        thumbnail=thumbnail,
        max_age_s=min(left, settings.media_cache_max_age_s),
    )


@router.get(
    "/media/{media_id:uuid}",
    summary="A media file",
    response_class=Response,
    responses=_FILE_RESPONSES,
)
async def get_media(
    media_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """The image; Range and If-None-Match supported."""
    media = await service.get_media(session, principal, media_id)
    return await serving.serve(
        request, media, store, thumbnail=False, max_age_s=settings.media_cache_max_age_s
    )


@router.get(
    "/media/{media_id:uuid}/thumbnail",
    summary="A media's thumbnail (JPEG)",
    response_class=Response,
    responses=_FILE_RESPONSES,
)
async def get_thumbnail(
    media_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """At most 320 pixels on its longest side."""
    media = await service.get_media(session, principal, media_id)
    return await serving.serve(
        request, media, store, thumbnail=True, max_age_s=settings.media_cache_max_age_s
    )


@router.get("/media/{media_id:uuid}/link", summary="A short-lived signed link to a media")
async def get_link(
    media_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    thumbnail: bool = False,
) -> LinkOut:
    """For notifications and webhooks: works without other auth until expires_at."""
    media = await service.get_media(session, principal, media_id)
    path, expires_at = signing.signed_link(settings, media.id, thumbnail=thumbnail)
    return LinkOut(url=_absolute(request, path), expires_at=datetime.fromtimestamp(expires_at, UTC))


@router.get("/devices/{device_id:uuid}/media", summary="A device's media")
async def list_device_media(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[MediaOut]:
    """Newest first."""
    rows, next_cursor = await service.list_device_media(
        session, principal, device_id, cursor=cursor, limit=limit
    )
    return Page(items=[MediaOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.delete("/devices/{device_id:uuid}/media", summary="Delete a device's media (admins)")
async def delete_device_media(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, store: StoreDep
) -> MediaRemoved:
    """Rows and files, thumbnails included; audited."""
    removed = await service.delete_device_media(session, principal, device_id, store)
    return MediaRemoved(deleted_files=removed.files, deleted_bytes=removed.bytes)
