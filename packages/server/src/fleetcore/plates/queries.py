"""Reading plates back for users of an organization: reads (fuzzy search, filters, pages),
one read, a plate's history across cameras, visits, and the watchlists."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from fleetcore.alerts.models import Severity
from fleetcore.auth.principal import Principal
from fleetcore.db import as_utc
from fleetcore.devices.models import Device
from fleetcore.errors import Invalid, NotFound
from fleetcore.media.models import Media
from fleetcore.pagination import page_of, paginate
from fleetcore.plates.models import (
    Plate,
    PlateNeighbour,
    PlateRead,
    PlateVisit,
    Watchlist,
    WatchlistEntry,
)
from fleetcore.plates.normalize import distance, neighbourhood, normalize
from fleetcore.plates.schemas import (
    PlateCameraOut,
    PlateHistoryOut,
    PlateReadOut,
    PlateVisitOut,
    WatchlistOut,
)

RECENT_VISITS = 20
FUZZY_DISTANCE = 1

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


@dataclass(frozen=True, slots=True)
class PlateFilter:
    """What reads and visits are both filtered on: the plate as typed (matched within one
    edit, or exactly), the camera, and a time range (`since` inclusive, `until` not)."""

    q: str | None = None
    exact: bool = False
    camera: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


ANY_PLATE = PlateFilter()


def query_key(q: str, field: str = "q") -> str:
    """The matching key of a searched plate; Invalid when nothing of a plate is left."""
    key = normalize(q).plate_key
    if not key:
        raise Invalid(
            "the search holds no letters or digits of a plate",
            code="INVALID_PLATE_QUERY",
            details={"field": field},
        )
    return key


async def matching_keys(
    session: AsyncSession, organization_id: uuid.UUID, key: str, *, exact: bool
) -> list[str]:
    """The organization's plate keys equal to `key` (exact) or within edit distance 1: an
    indexed lookup of the deletion neighbourhood, then the true distance checked here."""
    if exact:
        return [key]
    candidates = await session.scalars(
        select(Plate.plate_key)
        .join(PlateNeighbour, PlateNeighbour.plate_id == Plate.id)
        .where(
            PlateNeighbour.organization_id == organization_id,
            PlateNeighbour.nkey.in_(sorted(neighbourhood(key))),
        )
        .distinct()
    )
    return sorted(k for k in candidates if distance(key, k, FUZZY_DISTANCE) <= FUZZY_DISTANCE)


async def _filtered(
    session: AsyncSession,
    organization_id: uuid.UUID,
    query: S,
    filters: PlateFilter,
    table: type[PlateRead] | type[PlateVisit],
    *,
    starts: InstrumentedAttribute[datetime],
    ends: InstrumentedAttribute[datetime],
) -> S | None:
    """`query` narrowed by the filter, for reads and visits alike (a read starts and ends at
    its time); None when the plate matches no key, so there is nothing to list."""
    f = filters
    if f.q is not None and f.q.strip():
        keys = await matching_keys(session, organization_id, query_key(f.q), exact=f.exact)
        if not keys:
            return None
        query = query.where(table.plate_key.in_(keys))
    if f.camera is not None:
        query = query.where(table.device_id == f.camera)
    if f.since is not None:
        query = query.where(ends >= as_utc(f.since))
    if f.until is not None:
        query = query.where(starts < as_utc(f.until))
    return query


def _watched_keys(organization_id: uuid.UUID) -> Select[str]:
    return (
        select(WatchlistEntry.plate_key)
        .join(Watchlist, Watchlist.id == WatchlistEntry.watchlist_id)
        .where(Watchlist.organization_id == organization_id, Watchlist.enabled.is_(True))
    )


async def watchlists_of(
    session: AsyncSession, organization_id: uuid.UUID, keys: Iterable[str]
) -> dict[str, list[str]]:
    """Names of the enabled watchlists each of these plate keys is on."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await session.execute(
        select(WatchlistEntry.plate_key, Watchlist.name)
        .join(Watchlist, Watchlist.id == WatchlistEntry.watchlist_id)
        .where(
            Watchlist.organization_id == organization_id,
            Watchlist.enabled.is_(True),
            WatchlistEntry.plate_key.in_(wanted),
        )
        .order_by(Watchlist.name)
    )
    found: dict[str, list[str]] = defaultdict(list)
    for key, name in rows.all():
        found[key].append(name)
    return found


def _read_query(organization_id: uuid.UUID) -> Select[PlateRead, str, int | None, int | None]:
    return (
        select(PlateRead, Device.name, Media.width, Media.height)
        .join(Device, Device.id == PlateRead.device_id)
        .outerjoin(Media, Media.id == PlateRead.media_id)
        .where(PlateRead.organization_id == organization_id)
    )


async def _reads_out(
    session: AsyncSession, organization_id: uuid.UUID, rows: Iterable[Any]
) -> list[PlateReadOut]:
    rows = list(rows)
    lists = await watchlists_of(session, organization_id, (row[0].plate_key for row in rows))
    return [
        PlateReadOut(
            id=read.id,
            device_id=read.device_id,
            device_name=name,
            camera=read.camera,
            ts=read.ts,
            plate=read.plate,
            plate_norm=read.plate_norm,
            region=read.region,
            confidence=read.confidence,
            direction=read.direction,
            lane=read.lane,
            vehicle_type=read.vehicle_type,
            vehicle_color=read.vehicle_color,
            bbox=read.bbox,
            media_id=read.media_id,
            image_width=width,
            image_height=height,
            visit_id=read.visit_id,
            watchlists=lists.get(read.plate_key, []),
        )
        for read, name, width, height in rows
    ]


async def search_reads(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: PlateFilter = ANY_PLATE,
    watchlisted: bool | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[PlateReadOut], str | None]:
    """The organization's plate reads, newest first; `q` is normalised and matched within
    edit distance 1 (or exactly), `watchlisted` keeps reads of plates on (or off) an enabled
    watchlist."""
    org = principal.org_id
    query = await _filtered(
        session, org, _read_query(org), filters, PlateRead, starts=PlateRead.ts, ends=PlateRead.ts
    )
    if query is None:
        return [], None
    if watchlisted is True:
        query = query.where(PlateRead.plate_key.in_(_watched_keys(org)))
    elif watchlisted is False:
        query = query.where(PlateRead.plate_key.not_in(_watched_keys(org)))
    query = paginate(
        query,
        sort=PlateRead.ts,
        id_column=PlateRead.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    items = await _reads_out(session, org, (await session.execute(query)).all())
    return page_of(items, limit=limit, sort_attr="ts")


async def get_read(session: AsyncSession, principal: Principal, read_id: int) -> PlateReadOut:
    """One plate read of the caller's organization."""
    row = (
        await session.execute(_read_query(principal.org_id).where(PlateRead.id == read_id))
    ).first()
    if row is None:
        raise NotFound("plate read not found", code="PLATE_READ_NOT_FOUND")
    return (await _reads_out(session, principal.org_id, [row]))[0]


def _visit_out(visit: PlateVisit, device_name: str) -> PlateVisitOut:
    return PlateVisitOut(
        id=visit.id,
        device_id=visit.device_id,
        device_name=device_name,
        camera=visit.camera or None,
        plate_norm=visit.plate_norm,
        first_ts=visit.first_ts,
        last_ts=visit.last_ts,
        reads=visit.reads,
        best_confidence=visit.best_confidence,
    )


async def plate_history(session: AsyncSession, principal: Principal, plate: str) -> PlateHistoryOut:
    """A plate (as typed; matched by its key) across cameras: counts, cameras, recent visits."""
    key = query_key(plate, "plate")
    found = await session.scalar(
        select(Plate).where(Plate.organization_id == principal.org_id, Plate.plate_key == key)
    )
    if found is None:
        raise NotFound("no read of this plate", code="PLATE_NOT_FOUND")
    per_camera = await session.execute(
        select(
            PlateVisit.device_id,
            Device.name,
            PlateVisit.camera,
            func.count(),
            func.min(PlateVisit.first_ts),
            func.max(PlateVisit.last_ts),
        )
        .join(Device, Device.id == PlateVisit.device_id)
        .where(PlateVisit.plate_id == found.id)
        .group_by(PlateVisit.device_id, Device.name, PlateVisit.camera)
        .order_by(func.max(PlateVisit.last_ts).desc())
    )
    recent = await session.execute(
        select(PlateVisit, Device.name)
        .join(Device, Device.id == PlateVisit.device_id)
        .where(PlateVisit.plate_id == found.id)
        .order_by(PlateVisit.first_ts.desc(), PlateVisit.id.desc())
        .limit(RECENT_VISITS)
    )
    return PlateHistoryOut(
        plate_norm=found.plate_norm,
        plate=found.plate,
        region=found.region,
        first_seen=found.first_seen,
        last_seen=found.last_seen,
        reads=found.reads,
        visits=found.visits,
        cameras=[
            PlateCameraOut(
                device_id=device_id,
                device_name=name,
                camera=camera or None,
                visits=count,
                first_seen=as_utc(first),
                last_seen=as_utc(last),
            )
            for device_id, name, camera, count, first, last in per_camera.all()
        ],
        recent_visits=[_visit_out(visit, name) for visit, name in recent.all()],
    )


async def list_visits(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: PlateFilter = ANY_PLATE,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[PlateVisitOut], str | None]:
    """The organization's visits, newest first (by when they began), filtered as reads are
    (a visit is in the time range if any part of it is)."""
    org = principal.org_id
    visits = (
        select(PlateVisit, Device.name)
        .join(Device, Device.id == PlateVisit.device_id)
        .where(PlateVisit.organization_id == org)
    )
    query = await _filtered(
        session,
        org,
        visits,
        filters,
        PlateVisit,
        starts=PlateVisit.first_ts,
        ends=PlateVisit.last_ts,
    )
    if query is None:
        return [], None
    query = paginate(
        query,
        sort=PlateVisit.first_ts,
        id_column=PlateVisit.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    items = [_visit_out(visit, name) for visit, name in (await session.execute(query)).all()]
    return page_of(items, limit=limit, sort_attr="first_ts")


async def list_watchlists(session: AsyncSession, principal: Principal) -> list[WatchlistOut]:
    """The organization's watchlists by name, with how many plates each holds."""
    counts = (
        select(WatchlistEntry.watchlist_id, func.count().label("entries"))
        .where(WatchlistEntry.organization_id == principal.org_id)
        .group_by(WatchlistEntry.watchlist_id)
        .subquery()
    )
    rows = await session.execute(
        select(Watchlist, func.coalesce(counts.c.entries, 0))
        .outerjoin(counts, counts.c.watchlist_id == Watchlist.id)
        .where(Watchlist.organization_id == principal.org_id)
        .order_by(Watchlist.name)
    )
    return [watchlist_out(watchlist, int(entries)) for watchlist, entries in rows.all()]


def watchlist_out(watchlist: Watchlist, entries: int) -> WatchlistOut:
    """A watchlist as the API shows it."""
    return WatchlistOut(
        id=watchlist.id,
        name=watchlist.name,
        description=watchlist.description,
        severity=Severity(watchlist.severity),
        min_confidence=watchlist.min_confidence,
        enabled=watchlist.enabled,
        entries=entries,
        rule_id=watchlist.rule_id,
    )
