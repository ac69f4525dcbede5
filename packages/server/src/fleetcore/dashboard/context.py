"""Who is signed in to a page, and what every signed-in page's base template shows.

Shared by every domain's pages (through dashboard/web.py's Context aliases) and by the sign-in
pages, so no page module imports another domain's pages for them. A page without a signed-in
user is a redirect to the sign-in form, not a 401; a route driver outside their routes is a
redirect to them (deny by default): install_page_handlers() wires both.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.deps import SESSION_COOKIE, csrf_token, user_principal
from fleetcore.auth.models import Organization, User
from fleetcore.auth.principal import Principal
from fleetcore.config import Settings
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.errors import Unauthorized


class LoginRequired(Exception):
    """A page needs a signed-in user; answered with a redirect to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class DriverElsewhere(Exception):
    """A route driver opened a page outside their routes; answered with a redirect there."""


DRIVER_HOME = "/vending/routes"


async def any_page_principal(
    request: Request, session: SessionDep, settings: SettingsDep
) -> Principal:
    """The signed-in user of a page, drivers included, or a redirect to /auth/login."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRequired(request.url.path)
    try:
        principal = await user_principal(
            session, settings.secret_key.get_secret_value(), cookie, via_cookie=True
        )
    except Unauthorized:
        raise LoginRequired(request.url.path) from None
    request.state.principal = principal
    return principal


AnyPagePrincipal = Annotated[Principal, Depends(any_page_principal)]


async def page_principal(principal: AnyPagePrincipal) -> Principal:
    """The signed-in user of a page; a route driver is sent to their routes (deny by default)."""
    if principal.is_driver:
        raise DriverElsewhere
    return principal


PagePrincipal = Annotated[Principal, Depends(page_principal)]


async def page_context(
    request: Request, session: SessionDep, settings: SettingsDep, principal: PagePrincipal
) -> dict[str, object]:
    """What every signed-in page's base template shows: user, organization, CSRF token."""
    return await _context(request, session, settings, principal)


async def any_page_context(
    request: Request, session: SessionDep, settings: SettingsDep, principal: AnyPagePrincipal
) -> dict[str, object]:
    """page_context for the pages a driver may open (they scope what they show)."""
    return await _context(request, session, settings, principal)


async def _context(
    request: Request, session: AsyncSession, settings: Settings, principal: Principal
) -> dict[str, object]:
    user = await session.get(User, principal.user_id)
    org = (
        await session.get(Organization, principal.organization_id)
        if principal.organization_id
        else None
    )
    return {
        "request": request,
        "principal": principal,
        "user": user,
        "organization": org,
        "csrf_token": csrf_token(settings.secret_key.get_secret_value(), principal.session_id),
    }


async def _redirect_to_login(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return RedirectResponse(f"/auth/login?next={quote(exc.next_path)}", status_code=303)


async def _redirect_driver(request: Request, exc: Exception) -> Response:
    return RedirectResponse(DRIVER_HOME, status_code=303)


def install_page_handlers(app: FastAPI) -> None:
    """Pages redirect to sign-in instead of answering 401, and drivers to their routes."""
    app.add_exception_handler(LoginRequired, _redirect_to_login)
    app.add_exception_handler(DriverElsewhere, _redirect_driver)
