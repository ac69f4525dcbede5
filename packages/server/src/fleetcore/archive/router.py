"""GET /api/v1/telemetry/archives: the organization's archived days (any member)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fleetcore.archive import layout, service
from fleetcore.archive.models import TelemetryArchive
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.telemetry.query_schemas import ms_to_iso

router = APIRouter(prefix="/api/v1", tags=["telemetry"])


class ArchiveOut(BaseModel):
    """One archived day; `state` stale: being archived again, or readings arrived since;
    purged: its raw readings were deleted, the archive is their only copy."""

    id: str
    day: date
    state: Literal["archived", "stale", "purged"]
    rows: int
    files: int
    bytes: int
    min_ts: str | None
    max_ts: str | None
    store: str
    location: str
    manifest: str
    created_at: datetime

    @classmethod
    def of(cls, record: TelemetryArchive) -> ArchiveOut:
        """From the record."""
        state: Literal["archived", "stale", "purged"] = (
            "stale" if record.stale_at else "purged" if record.purged_at else "archived"
        )
        return cls(
            id=str(record.id),
            day=record.day,
            state=state,
            rows=record.rows,
            files=record.files,
            bytes=record.bytes,
            min_ts=None if record.min_ts is None else ms_to_iso(record.min_ts),
            max_ts=None if record.max_ts is None else ms_to_iso(record.max_ts),
            store=record.store,
            location=record.location,
            manifest=f"{record.location}/{layout.MANIFEST}",
            created_at=record.created_at,
        )


class ArchiveList(BaseModel):
    """Archived days, newest first."""

    items: list[ArchiveOut]


@router.get("/telemetry/archives", summary="The organization's archived days")
async def list_archives(
    session: SessionDep,
    principal: PrincipalDep,
    start: Annotated[date | None, Query(alias="from", description="first day (UTC)")] = None,
    end: Annotated[date | None, Query(alias="to", description="last day (UTC), inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LISTED)] = service.MAX_LISTED,
) -> ArchiveList:
    """Days of the caller's organization archived as Parquet (docs/archives.md)."""
    records = await service.list_archives(session, principal, start=start, end=end, limit=limit)
    return ArchiveList(items=[ArchiveOut.of(r) for r in records])
