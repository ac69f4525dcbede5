"""Storing a device's events and reading them back for users of its organization."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.db import as_utc, utcnow
from fleetcore.devices import service as devices
from fleetcore.devices.models import Device
from fleetcore.events.codec import EventIn, parse_events
from fleetcore.events.models import DeviceEvent
from fleetcore.events.ports import EventHook, EventSource, StoredEvent
from fleetcore.pagination import page_of, paginate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = structlog.get_logger(__name__)


def ms_to_datetime(ts_ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime (exact, no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ts_ms)


async def record_events(
    session: AsyncSession,
    device: EventSource,
    events: Sequence[EventIn],
    hooks: Sequence[EventHook] = (),
) -> int:
    """Insert the events in one statement and commit; returns how many were stored.

    With hooks (events/ports.py): each checks every event first, then writes its rows in the
    same transaction; a refusal from either rolls everything back and raises.
    """
    if not events:
        return 0
    hooks = [hook for hook in hooks if any(hook.wants(event) for event in events)]
    for hook in hooks:
        for index, event in enumerate(events):
            hook.check(event, index if len(events) > 1 else None)
    received_at = utcnow()
    rows = [
        {
            "organization_id": device.organization_id,
            "device_id": device.id,
            "ts": ms_to_datetime(event.ts_ms),
            "type": event.type,
            "severity": event.severity,
            "data": event.data,
            "received_at": received_at,
        }
        for event in events
    ]
    if not hooks:
        await session.execute(insert(DeviceEvent), rows)
        await session.commit()
        return len(rows)
    try:
        ids = (
            await session.scalars(
                insert(DeviceEvent).returning(DeviceEvent.id, sort_by_parameter_order=True), rows
            )
        ).all()
        stored = [
            StoredEvent(
                id=row_id,
                ts_ms=event.ts_ms,
                type=event.type,
                severity=event.severity,
                data=event.data,
                media=event.media,
            )
            for row_id, event in zip(ids, events, strict=True)
        ]
        after = [await hook.stored(session, device, stored) for hook in hooks]
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    for run in after:
        if run is None:
            continue
        try:
            run()
        except Exception:  # the events are committed; a failed follow-up must not undo that
            log.exception("event_after_commit_failed")
    return len(rows)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """What GET /api/v1/devices/{id}/events may filter on."""

    type: str | None = None
    severity: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    filters: EventFilter,
    cursor: str | None,
    limit: int,
) -> tuple[list[DeviceEvent], str | None]:
    """A live device's events, newest first (by the device's time), and the next cursor."""
    device = await devices.get_device(session, principal, device_id)
    query = select(DeviceEvent).where(
        DeviceEvent.device_id == device.id, DeviceEvent.organization_id == principal.org_id
    )
    if filters.type is not None:
        query = query.where(DeviceEvent.type == filters.type)
    if filters.severity is not None:
        query = query.where(DeviceEvent.severity == filters.severity)
    if filters.since is not None:
        query = query.where(DeviceEvent.ts >= as_utc(filters.since))
    if filters.until is not None:
        query = query.where(DeviceEvent.ts < as_utc(filters.until))
    query = paginate(
        query,
        sort=DeviceEvent.ts,
        id_column=DeviceEvent.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="ts")


async def ingest_payload(
    session: AsyncSession,
    device: EventSource,
    payload: bytes,
    hooks: Sequence[EventHook] = (),
) -> int:
    """Parse a device's payload and store every event, or raise Invalid and store none."""
    events = parse_events(payload, now_ms=int(time.time() * 1000))
    return await record_events(session, device, events, hooks)


async def recent_events(
    session: AsyncSession, principal: Principal, *, limit: int
) -> list[tuple[DeviceEvent, str]]:
    """The organization's newest events (by arrival) with their device's name."""
    query = (
        select(DeviceEvent, Device.name)
        .join(Device, Device.id == DeviceEvent.device_id)
        .where(DeviceEvent.organization_id == principal.org_id, Device.deleted_at.is_(None))
        .order_by(DeviceEvent.received_at.desc(), DeviceEvent.id.desc())
        .limit(limit)
    )
    return [(event, name) for event, name in (await session.execute(query)).all()]
