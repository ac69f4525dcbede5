"""Plate pages: /plates (reads newest first, thumbnails, filters in the address, live),
one read with its image and the box drawn, a plate's history across cameras, and
/watchlists (lists and their entries, changed through the watchlists API)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.models import Severity
from fleetcore.auth.principal import Principal, Role
from fleetcore.dashboard.web import Context, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import service as devices
from fleetcore.errors import Invalid
from fleetcore.plates import queries, service

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
HISTORY_READS = 20  # the newest reads shown on a plate's history
MAX_QUERY = 32  # characters of plate text; a plate is far shorter
# As the watchlists API decides (plates/service.py); the page only hides what it would refuse.
WATCHLIST_WRITER = Role.MANAGER  # lists own a rule: created and deleted as rules are
ENTRY_WRITER = Role.OPERATOR  # plates on a list
TRUE = frozenset({"1", "on", "true", "yes"})


@dataclass(frozen=True, slots=True)
class ReadFilters:
    """The /plates filters as typed (shown back in the form and in the page links)."""

    q: str = ""
    exact: bool = False
    camera: str = ""
    since: str = ""
    until: str = ""
    watchlisted: bool = False

    def query(self, **extra: str) -> dict[str, str]:
        """The filters as query parameters (only those set), plus `extra`."""
        values = {
            "q": self.q,
            "exact": "1" if self.exact else "",
            "camera": self.camera,
            "since": self.since,
            "until": self.until,
            "watchlisted": "1" if self.watchlisted else "",
            **extra,
        }
        return {k: v for k, v in values.items() if v}


def _instant(value: str, field: str) -> datetime | None:
    """A date and time from the form (datetime-local, or ISO 8601); naive means UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            f"{field} is not a date and time (e.g. 2026-05-01T08:30)",
            code="INVALID_FILTER",
            details={"field": field},
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _camera(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        raise Invalid(
            "camera is not a device id", code="INVALID_ID", details={"field": "camera"}
        ) from None


def _when(value: object) -> dict[str, Any] | None:
    """A timestamp (epoch ms or a datetime) as the templates show it: ISO, text and ms."""
    if value is None:
        return None
    if isinstance(value, datetime):
        at = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        at = datetime.fromtimestamp(value / 1000, tz=UTC)
    else:
        return None
    return {
        "iso": at.isoformat(),
        "text": at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "ms": int(at.timestamp() * 1000),
    }


async def _cameras(session: AsyncSession, principal: Principal) -> list[Any]:
    """The organization's devices, by name, for the camera filter."""
    rows, _ = await devices.list_devices(
        session, principal, filters=devices.DeviceFilter(), sort="name", cursor=None, limit=500
    )
    return rows


@router.get("/plates")
async def plate_reads(
    request: Request,
    session: SessionDep,
    context: Context,
    q: Annotated[str, Query(max_length=200)] = "",
    exact: Annotated[str, Query(max_length=8)] = "",
    camera: Annotated[str, Query(max_length=64)] = "",
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
    watchlisted: Annotated[str, Query(max_length=8)] = "",
    cursor: Annotated[str, Query(max_length=1024)] = "",
) -> HTMLResponse:
    """Plate reads, newest first, with thumbnails; filter by plate (fuzzy or exact), camera,
    time and watchlists. Bad filters are said above the form (422), never a failure."""
    principal = principal_of(context)
    filters = ReadFilters(
        q=q.strip(),
        exact=exact.lower() in TRUE,
        camera=camera,
        since=since,
        until=until,
        watchlisted=watchlisted.lower() in TRUE,
    )
    reads: list[Any] = []
    next_cursor: str | None = None
    error = ""
    try:
        if len(filters.q) > MAX_QUERY:
            raise Invalid(
                f"the plate text is at most {MAX_QUERY} characters",
                code="INVALID_FILTER",
                details={"field": "q"},
            )
        start, end = _instant(filters.since, "since"), _instant(filters.until, "until")
        if start and end and start > end:
            raise Invalid("since is after until", code="INVALID_FILTER", details={"field": "since"})
        reads, next_cursor = await queries.search_reads(
            session,
            principal,
            filters=queries.PlateFilter(
                q=filters.q or None,
                exact=filters.exact,
                camera=_camera(filters.camera),
                since=start,
                until=end,
            ),
            watchlisted=True if filters.watchlisted else None,
            cursor=cursor or None,
            limit=PAGE_SIZE,
        )
    except Invalid as exc:
        error = exc.message
    values: dict[str, Any] = {
        "reads": reads,
        "next_cursor": next_cursor,
        "filters": filters,
        "error": error,
        "live": not filters.query() and not cursor,  # the newest, unfiltered: live rows join
        "when": _when,
    }
    status = 422 if error else 200
    if is_fragment(request):
        return render(context, "plates/_reads.html", status_code=status, **values)
    cameras = await _cameras(session, principal)
    return render(context, "plates/list.html", status_code=status, cameras=cameras, **values)


@router.get("/plates/reads/{read_id}")
async def plate_read(
    read_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    context: Context,
    part: Annotated[str, Query(max_length=8)] = "",
) -> HTMLResponse:
    """One read: its image with the box drawn, every field, the camera and the visit;
    `part=row` is its row of the /plates table (what the live updates insert)."""
    read = await queries.get_read(session, principal_of(context), read_id)
    template = "plates/_read_row.html" if part == "row" else "plates/read.html"
    return render(context, template, r=read, when=_when)


@router.get("/plates/history/{plate:path}")  # a plate as typed may hold a slash
async def plate_history(
    plate: Annotated[str, Path(min_length=1, max_length=MAX_QUERY)],
    session: SessionDep,
    context: Context,
) -> HTMLResponse:
    """A plate across cameras: first and last seen, visits per camera, the latest visits
    and reads."""
    principal = principal_of(context)
    history = await queries.plate_history(session, principal, plate)
    reads, more = await queries.search_reads(
        session,
        principal,
        filters=queries.PlateFilter(q=history.plate_norm, exact=True),
        limit=HISTORY_READS,
    )
    return render(
        context, "plates/history.html", h=history, reads=reads, more=more is not None, when=_when
    )


@router.get("/watchlists")
async def watchlists(
    request: Request,
    session: SessionDep,
    context: Context,
) -> HTMLResponse:
    """The organization's watchlists with their entry counts; managers create lists here
    (through POST /api/v1/watchlists)."""
    principal = principal_of(context)
    lists = await queries.list_watchlists(session, principal)
    values: dict[str, Any] = {"lists": lists, "can_write": principal.has(WATCHLIST_WRITER)}
    if is_fragment(request):
        return render(context, "plates/_watchlists.html", **values)
    return render(
        context, "plates/watchlists.html", severities=[s.value for s in Severity], **values
    )


@router.get("/watchlists/{watchlist_id}")
async def watchlist(
    request: Request,
    watchlist_id: uuid.UUID,
    session: SessionDep,
    context: Context,
) -> HTMLResponse:
    """One watchlist and its plates; operators add and remove plates here (through
    POST and DELETE /api/v1/watchlists/{id}/entries)."""
    principal = principal_of(context)
    found = await service.watchlist_detail(session, principal, watchlist_id)
    values: dict[str, Any] = {
        "w": found,
        "entries": found.entry_list,
        "can_write": principal.has(ENTRY_WRITER),
    }
    if is_fragment(request):
        return render(context, "plates/_entries.html", **values)
    return render(context, "plates/watchlist.html", **values)
