"""Plates API: reads (fuzzy search), one read, a plate's history, visits, and watchlists
with their entries. Users of the organization; viewers read, operators change entries,
managers change lists."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from fleetcore.alerts.deps import BusDep
from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import body_limit
from fleetcore.deps import SessionDep
from fleetcore.devices.deps import MAX_CSV_BYTES, MULTIPART_OVERHEAD, CsvUpload
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.plates import queries, service
from fleetcore.plates.schemas import (
    EntriesAdded,
    EntriesIn,
    EntryIn,
    PlateHistoryOut,
    PlateReadOut,
    PlateVisitOut,
    WatchlistDetailOut,
    WatchlistIn,
    WatchlistOut,
    WatchlistPatch,
)

router = APIRouter(prefix="/api/v1", tags=["plates"])

Q = Annotated[
    str | None,
    Query(max_length=64, description="a plate however typed; matched within one edit"),
]
Exact = Annotated[bool, Query(description="match the normalised plate exactly")]
Camera = Annotated[uuid.UUID | None, Query(description="the camera device's id")]


def _plate_filter(
    q: Q = None,
    exact: Exact = False,
    camera: Camera = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> queries.PlateFilter:
    """The query parameters reads and visits share."""
    return queries.PlateFilter(q=q, exact=exact, camera=camera, since=since, until=until)


PlateFilterDep = Annotated[queries.PlateFilter, Depends(_plate_filter)]
_CSV_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "maxProperties": 4,
                }
            }
        },
    }
}


@router.get("/plates", summary="Search plate reads (the same as /plates/reads)")
@router.get("/plates/reads", summary="Search plate reads")
async def search_reads(
    session: SessionDep,
    principal: PrincipalDep,
    filters: PlateFilterDep,
    watchlisted: bool | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[PlateReadOut]:
    """Newest first. `q` is normalised (spaces, dashes, O/0, I/1, Thai digits, province)
    and matched within edit distance 1 unless `exact`; `since` inclusive, `until` not."""
    items, next_cursor = await queries.search_reads(
        session,
        principal,
        filters=filters,
        watchlisted=watchlisted,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/plates/reads/{read_id:int}", summary="A plate read")
async def get_read(read_id: int, session: SessionDep, principal: PrincipalDep) -> PlateReadOut:
    """One read; its image is GET /api/v1/media/{media_id}."""
    return await queries.get_read(session, principal, read_id)


@router.get("/plates/visits", summary="Plate visits")
async def list_visits(
    session: SessionDep,
    principal: PrincipalDep,
    filters: PlateFilterDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[PlateVisitOut]:
    """Reads of one plate on one camera close together, newest first (by their start)."""
    items, next_cursor = await queries.list_visits(
        session, principal, filters=filters, cursor=cursor, limit=limit
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/plates/{plate}/history", summary="A plate's history across cameras")
async def plate_history(
    plate: str, session: SessionDep, principal: PrincipalDep
) -> PlateHistoryOut:
    """First and last seen, reads, visits per camera, recent visits; the plate however
    typed (matched exactly on its normalised key)."""
    return await queries.plate_history(session, principal, plate)


@router.get("/watchlists", summary="List watchlists")
async def list_watchlists(session: SessionDep, principal: PrincipalDep) -> list[WatchlistOut]:
    """By name, with how many plates each holds."""
    return await queries.list_watchlists(session, principal)


@router.post("/watchlists", status_code=status.HTTP_201_CREATED, summary="Create a watchlist")
async def create_watchlist(
    data: WatchlistIn, session: SessionDep, principal: PrincipalDep
) -> WatchlistOut:
    """Managers. Its alerts belong to a rule made with it (shown read-only under rules)."""
    return await service.create_watchlist(session, principal, data=data)


@router.get("/watchlists/{watchlist_id:uuid}", summary="A watchlist and its plates")
async def get_watchlist(
    watchlist_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> WatchlistDetailOut:
    """The list with its entries, by plate."""
    return await service.watchlist_detail(session, principal, watchlist_id)


@router.patch("/watchlists/{watchlist_id:uuid}", summary="Change a watchlist")
async def update_watchlist(
    watchlist_id: uuid.UUID,
    data: WatchlistPatch,
    session: SessionDep,
    principal: PrincipalDep,
    bus: BusDep,
) -> WatchlistOut:
    """Managers. Disabling clears the list's open alerts."""
    return await service.update_watchlist(session, principal, bus, watchlist_id, data=data)


@router.delete(
    "/watchlists/{watchlist_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a watchlist",
)
async def delete_watchlist(
    watchlist_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, bus: BusDep
) -> None:
    """Managers. Its open alerts are cleared; past alerts stay."""
    await service.delete_watchlist(session, principal, bus, watchlist_id)


@router.post(
    "/watchlists/{watchlist_id:uuid}/entries",
    status_code=status.HTTP_201_CREATED,
    summary="Add plates to a watchlist",
)
async def add_entries(
    watchlist_id: uuid.UUID,
    data: EntryIn | EntriesIn,
    session: SessionDep,
    principal: PrincipalDep,
) -> EntriesAdded:
    """Operators. One entry ({"plate", "note"}) or many ({"entries": [...]}); plates are
    normalised, and one the list holds already (however typed) is answered in duplicates."""
    entries = data.entries if isinstance(data, EntriesIn) else [data]
    return await service.add_entries(session, principal, watchlist_id, entries)


@router.post(
    "/watchlists/{watchlist_id:uuid}/entries/import",
    status_code=status.HTTP_201_CREATED,
    summary="Add plates to a watchlist from a CSV file",
    openapi_extra=_CSV_BODY,
)
@body_limit(MAX_CSV_BYTES + MULTIPART_OVERHEAD)
async def import_entries(
    watchlist_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, content: CsvUpload
) -> EntriesAdded:
    """Operators. The multipart file field `file`: plate[,note] per line, an optional
    header line "plate,note"."""
    return await service.import_entries(session, principal, watchlist_id, content)


@router.delete(
    "/watchlists/{watchlist_id:uuid}/entries/{entry_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a plate from a watchlist",
)
async def delete_entry(
    watchlist_id: uuid.UUID, entry_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Operators."""
    await service.delete_entry(session, principal, watchlist_id, entry_id)
