"""Dashboard pages (HTML at pretty URLs, calling the same services as the API)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from fleetcore.dashboard import service
from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    """The home page is the dashboard."""
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/dashboard")
async def dashboard(session: SessionDep, context: Context) -> HTMLResponse:
    """Fleet overview: presence, ingest rate, recent events; live alerts as they come."""
    overview = await service.overview(session, principal_of(context))
    return render(context, "dashboard/index.html", overview=overview, counts=overview.counts)
