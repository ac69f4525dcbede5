"""Media rows: attaching them to events, reading them for users, usage, retention policy and
deleting a device's media. Bytes go through a MediaStore (media/store.py); a row is deleted
before its files, so a failure in between leaves an orphan file the sweep removes, never a
row pointing at nothing."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.config import Settings
from fleetcore.db import utcnow
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.devices.service import get_device
from fleetcore.errors import Invalid, NotFound
from fleetcore.events.ports import EventSource, StoredEvent
from fleetcore.media.images import CheckedImage
from fleetcore.media.metrics import DELETED
from fleetcore.media.models import Media, MediaPolicy, MediaStatus
from fleetcore.media.schemas import MAX_RETENTION_DAYS
from fleetcore.media.store import MediaStore
from fleetcore.pagination import page_of, paginate

log = structlog.get_logger(__name__)


def new_keys(
    organization_id: uuid.UUID, device_id: uuid.UUID, media_id: uuid.UUID
) -> tuple[str, str]:
    """Fresh storage keys (image, thumbnail): a random suffix per write, so two uploads of one
    pending media never write the same key (the loser deletes only its own files)."""
    base = f"{organization_id.hex}/{device_id.hex}/{media_id.hex}-{secrets.token_hex(4)}"
    return base, f"{base}.thumb.jpg"


async def device_max_bytes(session: AsyncSession, device: Device, settings: Settings) -> int:
    """The largest image this device may send: its profile's media_max_bytes or the default."""
    if device.profile_id is None:
        return settings.media_max_bytes
    limit = await session.scalar(
        select(DeviceProfile.media_max_bytes).where(DeviceProfile.id == device.profile_id)
    )
    return limit or settings.media_max_bytes


def ready_row(
    media_id: uuid.UUID,
    device: EventSource,
    image: CheckedImage,
    keys: tuple[str, str],
    *,
    expires_at: datetime | None = None,
) -> Media:
    """The row of a checked, stored image (attached later by an event)."""
    return Media(
        id=media_id,
        organization_id=device.organization_id,
        device_id=device.id,
        status=MediaStatus.READY,
        content_type=image.content_type,
        bytes=len(image.data),
        width=image.width,
        height=image.height,
        sha256=image.sha256,
        storage_key=keys[0],
        thumb_key=keys[1],
        thumb_bytes=len(image.thumbnail),
        expires_at=expires_at,
    )


def parse_reference(ref: str) -> uuid.UUID | None:
    """The media id an event names, or None when the reference is no id."""
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


def bad_reference(index: int | None, ref: str | None = None) -> Invalid:
    """MEDIA_REFERENCE_INVALID: never says whether the id exists elsewhere."""
    details: dict[str, object] = {"field": "media"}
    if index is not None:
        details["index"] = index
    if ref is not None:
        details["media"] = ref[:64]
    return Invalid(
        "media must name uploads of this device, ready and attached to no other event",
        code="MEDIA_REFERENCE_INVALID",
        details=details,
    )


async def attach(session: AsyncSession, device: EventSource, events: Sequence[StoredEvent]) -> None:
    """Attach every media the events name to them, in the caller's transaction; Invalid when
    one is not this device's, not ready, or already attached (nothing changes then)."""
    now = utcnow()
    many = len(events) > 1
    for position, event in enumerate(events):
        if not event.media:
            continue
        ids = [parse_reference(ref) for ref in event.media]
        if any(media_id is None for media_id in ids):
            raise bad_reference(position if many else None)
        # Conditional: two events (or payloads) naming one upload cannot both take it.
        result = await session.execute(
            update(Media)
            .where(
                Media.id.in_(ids),
                Media.device_id == device.id,
                Media.organization_id == device.organization_id,
                Media.status == MediaStatus.READY,
                Media.event_id.is_(None),
            )
            .values(event_id=event.id, attached_at=now, expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount or 0) != len(ids):  # type: ignore[attr-defined]
            raise bad_reference(position if many else None)


async def get_media(session: AsyncSession, principal: Principal, media_id: uuid.UUID) -> Media:
    """A stored media of the caller's organization, of a live device (viewers)."""
    principal.require(Role.VIEWER)
    media = await session.scalar(
        select(Media)
        .join(Device, Device.id == Media.device_id)
        .where(
            Media.id == media_id,
            Media.organization_id == principal.org_id,
            Media.status == MediaStatus.READY,
            Device.deleted_at.is_(None),
        )
    )
    if media is None:
        raise NotFound("media not found", code="MEDIA_NOT_FOUND")
    return media


async def get_ready(session: AsyncSession, media_id: uuid.UUID) -> Media:
    """A stored media by id alone (a signed link already proved the right to it)."""
    media = await session.scalar(
        select(Media)
        .join(Device, Device.id == Media.device_id)
        .where(Media.id == media_id, Media.status == MediaStatus.READY, Device.deleted_at.is_(None))
    )
    if media is None:
        raise NotFound("media not found", code="MEDIA_NOT_FOUND")
    return media


async def list_device_media(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[Media], str | None]:
    """A device's stored media, newest first (viewers)."""
    principal.require(Role.VIEWER)
    device = await get_device(session, principal, device_id)
    query = select(Media).where(Media.device_id == device.id, Media.status == MediaStatus.READY)
    query = paginate(
        query,
        sort=Media.created_at,
        id_column=Media.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    """Bytes and files one device's media take (thumbnails included)."""

    device_id: uuid.UUID
    bytes: int
    files: int


async def usage(session: AsyncSession, principal: Principal) -> list[DeviceUsage]:
    """The organization's stored media by device, largest first (viewers); pending uploads
    hold no bytes yet and are not counted."""
    principal.require(Role.VIEWER)
    files = func.count(Media.id) + func.count(Media.thumb_key)
    total = func.coalesce(func.sum(Media.bytes + Media.thumb_bytes), 0)
    rows = await session.execute(
        select(Media.device_id, total, files)
        .where(Media.organization_id == principal.org_id, Media.status == MediaStatus.READY)
        .group_by(Media.device_id)
        .order_by(total.desc(), Media.device_id)
    )
    return [DeviceUsage(device_id, int(size), int(count)) for device_id, size, count in rows]


@dataclass(frozen=True, slots=True)
class RetentionView:
    """An organization's media retention; is_default until it sets its own."""

    days: int
    is_default: bool
    updated_at: datetime | None


async def get_retention(
    session: AsyncSession, principal: Principal, *, default_days: int
) -> RetentionView:
    """The caller's organization's media retention (admins)."""
    principal.require(Role.ADMIN)
    row = await session.get(MediaPolicy, principal.org_id)
    if row is None:
        return RetentionView(default_days, True, None)
    return RetentionView(row.retention_days, False, row.updated_at)


async def set_retention(
    session: AsyncSession, principal: Principal, *, days: int, default_days: int
) -> RetentionView:
    """Set the organization's media retention in days, 0 = forever (admins); audited."""
    principal.require(Role.ADMIN)
    if not 0 <= days <= MAX_RETENTION_DAYS:
        raise Invalid(
            f"days must be between 0 (forever) and {MAX_RETENTION_DAYS}",
            code="RETENTION_INVALID",
            details={"field": "days"},
        )
    before = await get_retention(session, principal, default_days=default_days)
    row = await session.get(MediaPolicy, principal.org_id)
    if row is None:
        row = MediaPolicy(organization_id=principal.org_id, retention_days=days)
        session.add(row)
    else:
        row.retention_days = days
    await session.flush()
    audit.record(
        session,
        action="media.retention.update",
        actor=principal,
        organization_id=principal.org_id,
        target_type="organization",
        target_id=principal.org_id,
        details={"before": before.days, "after": days},
    )
    await session.commit()
    return RetentionView(days, False, row.updated_at)


@dataclass(frozen=True, slots=True)
class Removed:
    """What a deletion removed."""

    files: int
    bytes: int


async def delete_device_media(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, store: MediaStore
) -> Removed:
    """Delete every media of the device, rows then files (admins); audited."""
    principal.require(Role.ADMIN)
    device = await get_device(session, principal, device_id)
    rows = (
        await session.execute(
            select(Media.storage_key, Media.thumb_key, Media.bytes, Media.thumb_bytes).where(
                Media.device_id == device.id
            )
        )
    ).all()
    await session.execute(
        delete(Media).where(Media.device_id == device.id),
        execution_options={"synchronize_session": False},
    )
    removed = Removed(
        files=sum(1 + (thumb is not None) for _, thumb, _, _ in rows),
        bytes=sum(size + thumb_size for _, _, size, thumb_size in rows),
    )
    audit.record(
        session,
        action="media.device.delete",
        actor=principal,
        organization_id=principal.org_id,
        target_type="device",
        target_id=device.id,
        details={"media": len(rows), "files": removed.files, "bytes": removed.bytes},
    )
    await session.commit()
    await delete_files(store, [key for row in rows for key in row[:2] if key])
    DELETED.labels("request").inc(len(rows))
    return removed


async def delete_files(store: MediaStore, keys: Sequence[str]) -> None:
    """Delete files whose rows are gone; a failure leaves orphans for the sweep."""
    for key in keys:
        try:
            await store.delete(key)
        except Exception:  # the row is gone already: the orphan sweep retries
            log.warning("media_file_delete_failed", key=key, exc_info=True)
