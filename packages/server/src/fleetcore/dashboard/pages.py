"""Dashboard pages (HTML at pretty URLs, calling the same services as the API)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from fleetcore.auth.pages import page_context
from fleetcore.dashboard import service
from fleetcore.deps import SessionDep
from fleetcore.templating import templates

router = APIRouter(include_in_schema=False)
Context = Annotated[dict[str, object], Depends(page_context)]


@router.get("/")
async def root() -> RedirectResponse:
    """The home page is the dashboard."""
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/dashboard")
async def dashboard(request: Request, session: SessionDep, context: Context) -> HTMLResponse:
    """Fleet overview."""
    principal = context["principal"]
    counts = await service.counts(session, principal)  # type: ignore[arg-type]
    return templates.TemplateResponse(
        request, "dashboard/index.html", {**context, "counts": counts}
    )
