"""The asset tree page."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fleetcore.assets import service
from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)


@router.get("/assets")
async def asset_tree(session: SessionDep, context: Context) -> HTMLResponse:
    """Sites, buildings and the rest as a tree."""
    roots = await service.asset_tree(session, principal_of(context))
    return render(context, "assets/tree.html", roots=roots)
