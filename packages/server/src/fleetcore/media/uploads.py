"""The upload URL flow for large files (and for events sent over MQTT, whose payloads stay
small): the device asks for a URL, PUTs the raw bytes to it (signed, short-lived, single
use, no other auth), then an event names the media id in its ``media``."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import Request
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.body_limit import BodyTooLarge, read_capped
from fleetcore.config import Settings
from fleetcore.db import utcnow
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, DomainError, Invalid
from fleetcore.media import service, signing
from fleetcore.media.images import check_image_async, too_large
from fleetcore.media.metrics import REFUSED, STORED_BYTES, STORED_FILES
from fleetcore.media.models import Media, MediaStatus
from fleetcore.media.schemas import MediaStored, UploadIn
from fleetcore.media.store import MediaStore


def _used() -> Conflict:
    return Conflict(
        "this upload URL has been used or has expired; ask for a new one",
        code="MEDIA_UPLOAD_USED",
    )


async def create_upload(
    session: AsyncSession, device: Device, settings: Settings, data: UploadIn
) -> tuple[Media, str]:
    """A pending media and the token of its upload URL."""
    limit = await service.device_max_bytes(session, device, settings)
    if data.bytes > limit:
        REFUSED.labels("media_too_large").inc()
        # The body of this request is small: the declared size breaks a rule (422), the same
        # code as a file sent too large (413).
        raise Invalid(
            f"the image may be at most {limit} bytes",
            code="MEDIA_TOO_LARGE",
            details={"max_bytes": limit, "bytes": data.bytes},
        )
    media_id = uuid.uuid4()
    expires_at = utcnow().replace(microsecond=0) + timedelta(
        seconds=settings.media_upload_url_ttl_s
    )
    keys = service.new_keys(device.organization_id, device.id, media_id)
    media = Media(
        id=media_id,
        organization_id=device.organization_id,
        device_id=device.id,
        status=MediaStatus.PENDING,
        content_type=data.content_type,
        bytes=0,  # nothing stored yet: usage counts stored bytes only
        storage_key=keys[0],
        thumb_key=None,
        expires_at=expires_at,
    )
    session.add(media)
    await session.commit()
    token = signing.sign(settings, "upload", media_id, int(expires_at.timestamp()))
    return media, token


async def _read(request: Request, limit: int) -> bytes:
    try:
        return await read_capped(request, limit)
    except BodyTooLarge as exc:
        raise too_large(exc.declared, limit) from None


async def receive_upload(
    request: Request,
    session: AsyncSession,
    token: str,
    *,
    settings: Settings,
    store: MediaStore,
) -> MediaStored:
    """Check and store the PUT's bytes; the media becomes ready (once)."""
    try:
        return await _receive(request, session, token, settings=settings, store=store)
    except DomainError as exc:
        REFUSED.labels(exc.code.lower()).inc()
        raise


async def _receive(
    request: Request,
    session: AsyncSession,
    token: str,
    *,
    settings: Settings,
    store: MediaStore,
) -> MediaStored:
    grant = signing.verify(settings, token, "upload")
    media = await session.get(Media, grant.media_id)
    if media is None or media.status != MediaStatus.PENDING:
        raise _used()
    device = await session.get(Device, media.device_id)
    if device is None or device.deleted_at is not None:
        raise _used()
    limit = await service.device_max_bytes(session, device, settings)
    data = await _read(request, limit)
    image = await check_image_async(data, max_bytes=limit, max_pixels=settings.media_max_pixels)
    keys = service.new_keys(device.organization_id, device.id, media.id)
    written: list[str] = []
    try:
        await store.put(keys[0], image.data)
        written.append(keys[0])
        await store.put(keys[1], image.thumbnail)
        written.append(keys[1])
        now = utcnow()
        # Conditional: of two PUTs racing on one URL, one wins; the other deletes its files.
        result = await session.execute(
            update(Media)
            .where(
                Media.id == media.id,
                Media.status == MediaStatus.PENDING,
                Media.expires_at > now,
            )
            .values(
                status=MediaStatus.READY,
                content_type=image.content_type,
                bytes=len(image.data),
                width=image.width,
                height=image.height,
                sha256=image.sha256,
                storage_key=keys[0],
                thumb_key=keys[1],
                thumb_bytes=len(image.thumbnail),
                expires_at=now + timedelta(seconds=settings.media_unattached_ttl_s),
            )
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount or 0) != 1:  # type: ignore[attr-defined]
            raise _used()
        await session.commit()
    except BaseException:
        await session.rollback()
        await service.delete_files(store, written)
        raise
    STORED_BYTES.labels("image").inc(len(image.data))
    STORED_BYTES.labels("thumbnail").inc(len(image.thumbnail))
    STORED_FILES.labels("upload").inc()
    return MediaStored(
        id=media.id,
        content_type=image.content_type,
        bytes=len(image.data),
        width=image.width,
        height=image.height,
    )
