"""Admin pages: the organization's users and API keys."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fleetcore.auth import api_keys, users
from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)


@router.get("/users")
async def user_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Admins: the organization's users and their roles."""
    rows = await users.list_users(session, principal_of(context), cursor=None, limit=500)
    return render(context, "auth/users.html", users=rows[:500])


@router.get("/api-keys")
async def api_key_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Admins: the organization's API keys (never their secrets)."""
    rows = await api_keys.list_api_keys(session, principal_of(context))
    return render(context, "auth/api_keys.html", keys=rows)
