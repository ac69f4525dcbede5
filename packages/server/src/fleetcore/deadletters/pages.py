"""The dead-letter page: device payloads the platform could not use, and why."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deadletters import service
from fleetcore.deadletters.service import DeadLetterFilter
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


@router.get("/dead-letters")
async def dead_letters(
    session: SessionDep,
    context: Context,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    """Newest first; filter by reason."""
    rows, next_cursor = await service.list_dead_letters(
        session,
        principal_of(context),
        filters=DeadLetterFilter(reason=reason or None),
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    return render(
        context, "deadletters/list.html", letters=rows, reason=reason or "", next_cursor=next_cursor
    )
