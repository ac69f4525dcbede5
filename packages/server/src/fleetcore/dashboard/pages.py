"""Dashboard pages (HTML at pretty URLs, calling the same services as the API)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

from fleetcore.alerts import service as alerts
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
    principal = principal_of(context)
    overview = await service.overview(session, principal)
    return render(
        context,
        "dashboard/index.html",
        overview=overview,
        counts=overview.counts,
        alert_summary=await alerts.active_by_severity(session, principal),
    )


@router.get("/dashboard/alert-summary")
async def alert_summary(session: SessionDep, context: Context) -> HTMLResponse:
    """Active alerts per severity (the fragment the dashboard reloads on alert changes)."""
    summary = await alerts.active_by_severity(session, principal_of(context))
    return render(context, "dashboard/_alert_summary.html", alert_summary=summary)
