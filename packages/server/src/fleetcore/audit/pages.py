"""The audit log page (admins)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from fleetcore.audit import service
from fleetcore.audit.service import AuditFilter
from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


@router.get("/audit")
async def audit_log(
    session: SessionDep,
    context: Context,
    action: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """Newest first, a page at a time; filter by action."""
    rows = await service.list_events(
        session,
        principal_of(context),
        filters=AuditFilter(action=action or None),
        before_id=before,
        limit=PAGE_SIZE,
    )
    older = rows[-1].id if len(rows) == PAGE_SIZE else None
    return render(context, "audit/list.html", events=rows, action=action or "", older=older)
