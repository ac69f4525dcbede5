"""Events with their images in one multipart/form-data request (POST /devices/me/events).

A part ``event`` holds the JSON (one event or an array, as the JSON body) and 1..8 file parts
hold images. An event's ``media`` names the file parts it owns (or media ids uploaded
before); a single event without ``media`` owns every file part; a file part no event owns is
refused. Order, so that a refusal stores nothing:

1. the body is parsed as it streams, its total capped, file parts spooled to temporary files;
2. the events are parsed and checked (every event hook's check, with the parts' new ids);
3. every image is checked (type, size, pixels, decode) and re-encoded, off the event loop;
4. the files are written to the store;
5. one transaction inserts the media rows and the events (record_events with the layer's
   hooks; the media hook attaches the rows) and commits. If it fails, the files are deleted.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException

from fleetcore.body_limit import BodyTooLarge, parse_form
from fleetcore.config import Settings
from fleetcore.devices.models import Device
from fleetcore.errors import DomainError, Invalid, PayloadTooLarge
from fleetcore.events.codec import MAX_MEDIA, EventIn, parse_events
from fleetcore.events.ports import EventHook
from fleetcore.events.service import record_events
from fleetcore.media import service
from fleetcore.media.images import CheckedImage, check_image_async, too_large
from fleetcore.media.metrics import REFUSED, STORED_BYTES, STORED_FILES
from fleetcore.media.schemas import MediaStored
from fleetcore.media.store import MediaStore

EVENT_PART = "event"
MAX_EVENT_BYTES = 2 * 1024 * 1024  # as the JSON body of the same route


def is_multipart(request: Request) -> bool:
    """Whether the request's body is multipart/form-data."""
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


def _request_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request is larger than {limit} bytes (the event and all its files)",
        code="MEDIA_REQUEST_TOO_LARGE",
        details={"max_bytes": limit},
    )


async def _parse(request: Request, limit: int) -> FormData:
    try:
        return await parse_form(
            request, limit, max_files=MAX_MEDIA, max_fields=1, max_part_size=MAX_EVENT_BYTES
        )
    except BodyTooLarge:
        raise _request_too_large(limit) from None
    except MultiPartException as exc:
        raise Invalid(
            f"the multipart body is not valid: {exc.message} (one part 'event' and 1-{MAX_MEDIA} "
            "file parts with a filename)",
            code="MULTIPART_INVALID",
        ) from None


def _files(form: FormData) -> tuple[bytes, dict[str, UploadFile]]:
    event: bytes | None = None
    files: dict[str, UploadFile] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name in files or name == EVENT_PART:
                raise Invalid(
                    f"two file parts are named {name[:64]!r}",
                    code="MEDIA_PART_DUPLICATE",
                    details={"part": name[:64]},
                )
            files[name] = value
        elif name == EVENT_PART:
            event = value.encode()
        else:
            raise Invalid(
                f"unexpected field {name[:64]!r}: send the events as the part 'event' and "
                "images as file parts (with a filename)",
                code="MULTIPART_INVALID",
                details={"part": name[:64]},
            )
    if event is None:
        raise Invalid("the part 'event' (the events' JSON) is missing", code="EVENT_REQUIRED")
    if not files:
        raise Invalid(f"send 1-{MAX_MEDIA} image file parts with the event", code="MEDIA_REQUIRED")
    return event, files


def _owners(events: Sequence[EventIn], parts: Sequence[str]) -> dict[str, int]:
    """Which event owns each file part."""
    if len(events) == 1 and not events[0].media:
        return dict.fromkeys(parts, 0)
    owners: dict[str, int] = {}
    for index, event in enumerate(events):
        for ref in event.media:
            if ref not in parts:
                continue  # a media id uploaded before: the media hook resolves it
            if ref in owners:
                raise Invalid(
                    f"the file part {ref!r} is named by two events",
                    code="MEDIA_PART_TWICE",
                    details={"part": ref, "index": index},
                )
            owners[ref] = index
    unowned = sorted(set(parts) - set(owners))
    if unowned:
        raise Invalid(
            f"no event names the file part {unowned[0][:64]!r} in its media",
            code="MEDIA_PART_UNCLAIMED",
            details={"parts": [name[:64] for name in unowned]},
        )
    return owners


def _with_ids(
    events: Sequence[EventIn], owners: dict[str, int], ids: dict[str, uuid.UUID]
) -> list[EventIn]:
    """The events with part names replaced by the ids their files will be stored under."""
    out = []
    for index, event in enumerate(events):
        mine = [name for name, owner in owners.items() if owner == index]
        refs = [str(ids[ref]) if ref in ids else ref for ref in event.media]
        refs += [str(ids[name]) for name in mine if name not in event.media]
        out.append(dataclasses.replace(event, media=tuple(refs)))
    return out


async def _check(
    files: dict[str, UploadFile], *, max_bytes: int, max_pixels: int
) -> dict[str, CheckedImage]:
    checked: dict[str, CheckedImage] = {}
    for name, upload in files.items():
        if upload.size is not None and upload.size > max_bytes:
            raise too_large(upload.size, max_bytes)
        data = await upload.read(max_bytes + 1)
        checked[name] = await check_image_async(data, max_bytes=max_bytes, max_pixels=max_pixels)
    return checked


async def store_event_request(
    request: Request,
    session: AsyncSession,
    device: Device,
    *,
    hooks: Sequence[EventHook],
    settings: Settings,
    store: MediaStore,
    write_turn: AbstractAsyncContextManager[None],
) -> tuple[int, list[MediaStored]]:
    """Check everything, write the files, store rows and events in one transaction (taken
    in `write_turn`: Database.write_turn)."""
    try:
        form = await _parse(request, settings.media_request_max_bytes)
        try:
            return await _store(
                form,
                session,
                device,
                hooks=hooks,
                settings=settings,
                store=store,
                write_turn=write_turn,
            )
        finally:
            await form.close()
    except DomainError as exc:
        REFUSED.labels(exc.code.lower()).inc()
        raise


async def _store(
    form: FormData,
    session: AsyncSession,
    device: Device,
    *,
    hooks: Sequence[EventHook],
    settings: Settings,
    store: MediaStore,
    write_turn: AbstractAsyncContextManager[None],
) -> tuple[int, list[MediaStored]]:
    body, files = _files(form)
    events = parse_events(body, now_ms=int(time.time() * 1000))
    owners = _owners(events, list(files))
    ids = {name: uuid.uuid4() for name in files}
    events = _with_ids(events, owners, ids)
    for hook in hooks:  # pure: refuse a bad event before any image work
        for index, event in enumerate(events):
            hook.check(event, index if len(events) > 1 else None)
    max_bytes = await service.device_max_bytes(session, device, settings)
    # End the read transaction: the write below starts a fresh one (on SQLite a transaction
    # that read and then writes fails at once if another writer committed in between).
    await session.commit()
    checked = await _check(files, max_bytes=max_bytes, max_pixels=settings.media_max_pixels)
    rows = []
    written: list[str] = []
    try:
        for name, image in checked.items():
            keys = service.new_keys(device.organization_id, device.id, ids[name])
            await store.put(keys[0], image.data)
            written.append(keys[0])
            await store.put(keys[1], image.thumbnail)
            written.append(keys[1])
            rows.append(service.ready_row(ids[name], device, image, keys))
        async with write_turn:
            session.add_all(rows)
            await session.flush()
            stored = await record_events(session, device, events, hooks)
    except BaseException:
        await session.rollback()
        await service.delete_files(store, written)
        raise
    for image in checked.values():
        STORED_BYTES.labels("image").inc(len(image.data))
        STORED_BYTES.labels("thumbnail").inc(len(image.thumbnail))
    STORED_FILES.labels("multipart").inc(len(checked))
    return stored, [
        MediaStored(
            id=ids[name],
            part=name,
            content_type=image.content_type,
            bytes=len(image.data),
            width=image.width,
            height=image.height,
        )
        for name, image in checked.items()
    ]
