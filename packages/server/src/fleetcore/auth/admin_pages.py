"""Admin pages: the organization's users and API keys."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fleetcore.accounts import invitations
from fleetcore.auth import api_keys, users
from fleetcore.auth.principal import Role
from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep

router = APIRouter(include_in_schema=False)


@router.get("/users")
async def user_list(
    session: SessionDep, context: Context, invite_error: str | None = None
) -> HTMLResponse:
    """Admins: the organization's users and their roles."""
    principal = principal_of(context)
    rows = await users.list_users(session, principal, cursor=None, limit=500)
    pending = await invitations.list_invitations(session, principal)
    shown = [{"row": r, "status": invitations.status_of(r)} for r in pending]
    return render(
        context,
        "auth/users.html",
        users=rows[:500],
        invitations=[{**vars(i["row"]), "status": i["status"]} for i in shown],
        roles=[r.value for r in Role],
        invite_error="That email address is not valid." if invite_error else None,
    )


@router.get("/api-keys")
async def api_key_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Admins: the organization's API keys (never their secrets)."""
    rows = await api_keys.list_api_keys(session, principal_of(context))
    return render(context, "auth/api_keys.html", keys=rows)
