"""Plate reads stored in the transaction of their events: the read, its visit (extended or
new), the organization's plate and its fuzzy-search keys, and watchlist alerts.

Concurrency: two payloads reading one plate at once must not both open a visit. Each
transaction first upserts the plates row of every plate it reads, in key order; on
PostgreSQL the upsert (INSERT ... ON CONFLICT DO UPDATE) locks that row until the commit, so
a second transaction on the same plate waits there and then, under READ COMMITTED, its next
statement sees the first one's visit and extends it. Locking in key order keeps two
payloads with several plates from deadlocking. SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service as alerts
from fleetcore.alerts.events import AlertChange, stage
from fleetcore.errors import Conflict
from fleetcore.events.ports import EventSource
from fleetcore.events.service import ms_to_datetime
from fleetcore.media.models import Media
from fleetcore.plates.models import (
    Plate,
    PlateNeighbour,
    PlateRead,
    PlateVisit,
    Watchlist,
    WatchlistEntry,
)
from fleetcore.plates.normalize import neighbourhood
from fleetcore.plates.reads import ReadData
from fleetcore.rules.models import Rule


@dataclass(frozen=True, slots=True)
class IncomingRead:
    """A plate read of a stored event."""

    event_id: int
    ts_ms: int
    data: ReadData
    media: tuple[str, ...]


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def _lock_plates(
    session: AsyncSession, organization_id: uuid.UUID, reads: Sequence[IncomingRead]
) -> dict[str, Plate]:
    """The plates rows of these reads, created if new, locked until the commit."""
    first: dict[str, IncomingRead] = {}
    for read in reads:
        first.setdefault(read.data.plate_key, read)
    insert = _insert(session)
    found: dict[str, Plate] = {}
    for key in sorted(first):  # one order for every transaction: no deadlock
        read = first[key]
        at = ms_to_datetime(read.ts_ms)
        statement = insert(Plate).values(
            organization_id=organization_id,
            plate_key=key,
            plate_norm=read.data.plate_norm,
            plate=read.data.plate,
            region=read.data.region,
            first_seen=at,
            last_seen=at,
            reads=0,
            visits=0,
        )
        plate_id = await session.scalar(
            statement.on_conflict_do_update(
                index_elements=[Plate.organization_id, Plate.plate_key],
                set_={"plate_key": statement.excluded.plate_key},  # a no-op that takes the lock
            ).returning(Plate.id)
        )
        plate = await session.scalar(
            select(Plate).where(Plate.id == plate_id).execution_options(populate_existing=True)
        )
        assert plate is not None  # just upserted in this transaction
        if plate.reads == 0:  # created here: counts are set before this transaction commits
            await session.execute(
                insert(PlateNeighbour)
                .values(
                    [
                        {"plate_id": plate.id, "nkey": nkey, "organization_id": organization_id}
                        for nkey in sorted(neighbourhood(key))
                    ]
                )
                .on_conflict_do_nothing()
            )
        found[key] = plate
    return found


async def _media_of(
    session: AsyncSession, device: EventSource, reads: Sequence[IncomingRead]
) -> set[uuid.UUID]:
    """Which attachment refs are this device's media (the media hook resolved them)."""
    ids: set[uuid.UUID] = set()
    for read in reads:
        for ref in read.media:
            try:
                ids.add(uuid.UUID(ref))
            except ValueError:
                continue  # a file part name: no media module resolved it
    if not ids:
        return set()
    rows = await session.scalars(
        select(Media.id).where(Media.id.in_(sorted(ids)), Media.device_id == device.id)
    )
    return set(rows)


async def _visit_of(
    session: AsyncSession, device: EventSource, camera: str, key: str, ts_ms: int, window_s: int
) -> PlateVisit | None:
    """The visit this read continues: same plate and camera, within the window."""
    at, window = ms_to_datetime(ts_ms), timedelta(seconds=window_s)
    return await session.scalar(
        select(PlateVisit)
        .where(
            PlateVisit.device_id == device.id,
            PlateVisit.plate_key == key,
            PlateVisit.camera == camera,
            PlateVisit.last_ts >= at - window,
            PlateVisit.first_ts <= at + window,
        )
        .order_by(PlateVisit.last_ts.desc(), PlateVisit.id.desc())
        .limit(1)
    )


async def record_reads(
    session: AsyncSession,
    device: EventSource,
    reads: Sequence[IncomingRead],
    *,
    visit_window_s: int,
    public_url: str = "",
) -> tuple[list[PlateRead], list[AlertChange]]:
    """Store the reads (see the module docstring); the rows and the alert changes to publish.
    A read whose `read_id` the device used before refuses the payload (409), all of it."""
    org = device.organization_id
    await _refuse_duplicates(session, device, reads)
    plates = await _lock_plates(session, org, reads)
    media = await _media_of(session, device, reads)
    crossed: list[tuple[PlateRead, float]] = []  # reads that took a visit to a new best
    stored: list[PlateRead] = []
    for incoming in sorted(reads, key=lambda r: (r.ts_ms, r.event_id)):
        data, at = incoming.data, ms_to_datetime(incoming.ts_ms)
        camera = data.camera or ""
        plate = plates[data.plate_key]
        visit = await _visit_of(
            session, device, camera, data.plate_key, incoming.ts_ms, visit_window_s
        )
        before = -1.0
        if visit is None:
            visit = PlateVisit(
                organization_id=org,
                device_id=device.id,
                camera=camera,
                plate_id=plate.id,
                plate_key=data.plate_key,
                plate_norm=data.plate_norm,
                first_ts=at,
                last_ts=at,
                reads=0,
                best_confidence=data.confidence,
            )
            session.add(visit)
            await session.flush()
            plate.visits += 1
        else:
            before = visit.best_confidence
            visit.first_ts, visit.last_ts = min(visit.first_ts, at), max(visit.last_ts, at)
        visit.reads += 1
        media_id = next(
            (uuid.UUID(ref) for ref in incoming.media if _is_uuid(ref) and uuid.UUID(ref) in media),
            None,
        )
        read = PlateRead(
            organization_id=org,
            device_id=device.id,
            camera=data.camera,
            event_id=incoming.event_id,
            ts=at,
            plate=data.plate,
            plate_norm=data.plate_norm,
            plate_key=data.plate_key,
            region=data.region,
            confidence=data.confidence,
            direction=data.direction,
            lane=data.lane,
            vehicle_type=data.vehicle_type,
            vehicle_color=data.vehicle_color,
            bbox=list(data.bbox) if data.bbox is not None else None,
            media_id=media_id,
            visit_id=visit.id,
            read_id=data.read_id,
        )
        session.add(read)
        try:
            await session.flush()
        except IntegrityError:  # the same read_id committed meanwhile by a concurrent request
            if data.read_id is None:
                raise
            raise _duplicate(data.read_id, None) from None
        stored.append(read)
        if data.confidence > before:
            visit.best_confidence, visit.best_read_id = data.confidence, read.id
            crossed.append((read, before))
        plate.reads += 1
        plate.first_seen = min(plate.first_seen, at)
        if at >= plate.last_seen:  # the newest read names the plate as shown
            plate.last_seen = at
            plate.plate, plate.plate_norm = data.plate, data.plate_norm
            plate.region = data.region or plate.region
    await session.flush()
    return stored, await _watchlist_alerts(session, device, crossed, public_url)


def _duplicate(read_id: str, existing: int | None) -> Conflict:
    return Conflict(
        f"the read {read_id!r} was stored before (sent again after a lost answer?)",
        code="PLATE_READ_DUPLICATE",
        details={"read_id": read_id, "id": existing},
    )


async def _refuse_duplicates(
    session: AsyncSession, device: EventSource, reads: Sequence[IncomingRead]
) -> None:
    ids = [r.data.read_id for r in reads if r.data.read_id is not None]
    if not ids:
        return
    twice = next((i for i in ids if ids.count(i) > 1), None)
    if twice is not None:
        raise _duplicate(twice, None)
    found = (
        await session.execute(
            select(PlateRead.read_id, PlateRead.id).where(
                PlateRead.device_id == device.id, PlateRead.read_id.in_(ids)
            )
        )
    ).first()
    if found is not None:
        raise _duplicate(str(found[0]), found[1])


def _is_uuid(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


async def _watchlist_alerts(
    session: AsyncSession,
    device: EventSource,
    crossed: list[tuple[PlateRead, float]],
    public_url: str,
) -> list[AlertChange]:
    """Alert once per visit and watchlist: when the visit's best confidence first reaches the
    list's threshold (a new visit, or a better read of a visit that had not reached it)."""
    if not crossed:
        return []
    keys = sorted({read.plate_key for read, _ in crossed})
    rows = (
        await session.execute(
            select(WatchlistEntry.plate_key, WatchlistEntry.note, Watchlist, Rule)
            .join(Watchlist, Watchlist.id == WatchlistEntry.watchlist_id)
            .join(Rule, Rule.id == Watchlist.rule_id)
            .where(
                Watchlist.organization_id == device.organization_id,
                Watchlist.enabled.is_(True),
                WatchlistEntry.plate_key.in_(keys),
            )
            .order_by(Watchlist.name)
        )
    ).all()
    changes: list[AlertChange] = []
    for read, before in crossed:
        for key, note, watchlist, rule in rows:
            threshold = watchlist.min_confidence
            if key != read.plate_key or not before < threshold <= read.confidence:
                continue
            values = hit_details(read, watchlist, note, public_url)
            alert, event = await alerts.open_alert(
                session, rule, device.id, int(read.ts.timestamp() * 1000), values
            )
            if event == "repeated":  # open already on this camera: it shows the newest hit
                alert.details = {**alert.details, "values": values}
            changes.append(await stage(session, alert, event))
    return changes


def hit_details(
    read: PlateRead, watchlist: Watchlist, note: str, public_url: str = ""
) -> dict[str, Any]:
    """What a watchlist alert carries: the plate, the read, the camera, links to the read's
    page and image (links, never the bytes: webhooks carry this; absolute with the
    `public_url` setting, so a link in an email or a webhook opens, after signing in)."""
    base = public_url.rstrip("/")
    return {
        "plate": read.plate,
        "plate_norm": read.plate_norm,
        "region": read.region,
        "confidence": read.confidence,
        "read_id": read.id,
        "visit_id": read.visit_id,
        "camera": read.camera,
        "watchlist_id": str(watchlist.id),
        "watchlist": watchlist.name,
        "note": note,
        "read_url": f"{base}/plates/reads/{read.id}",
        "media_id": str(read.media_id) if read.media_id else None,
        "image_url": f"{base}/api/v1/media/{read.media_id}" if read.media_id else None,
    }
