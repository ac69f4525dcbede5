"""What every dashboard page shares: its context, rendering, and CSRF-checked writes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from starlette.routing import Match, Router

from fleetcore.auth.deps import CSRF_HEADER, csrf_token
from fleetcore.auth.principal import Principal, Role
from fleetcore.auth.security import same
from fleetcore.config import Settings
from fleetcore.dashboard.context import (
    AnyPagePrincipal,
    PagePrincipal,
    any_page_context,
    page_context,
)
from fleetcore.deps import SettingsDep
from fleetcore.errors import Forbidden
from fleetcore.templating import templates

Context = Annotated[dict[str, object], Depends(page_context)]
# Pages a route driver may open too (vending routes, service orders): they scope what they show.
AnyContext = Annotated[dict[str, object], Depends(any_page_context)]

# The navigation, in order: (path, label, least role). A link shows once its page is
# registered, so pages added later (alerts, rules) appear without touching this.
NAV: tuple[tuple[str, str, Role], ...] = (
    ("/dashboard", "Dashboard", Role.VIEWER),
    ("/devices", "Devices", Role.VIEWER),
    ("/alerts", "Alerts", Role.VIEWER),
    ("/plates", "Plates", Role.VIEWER),
    ("/rules", "Rules", Role.VIEWER),
    ("/analytics", "Analytics", Role.VIEWER),
    ("/recommendations", "Recommendations", Role.VIEWER),
    ("/profiles", "Profiles", Role.VIEWER),
    ("/assets", "Assets", Role.VIEWER),
    ("/dead-letters", "Dead letters", Role.VIEWER),
    ("/vending", "Vending", Role.VIEWER),
    ("/ota", "Updates", Role.VIEWER),
    ("/users", "Users", Role.ADMIN),
    ("/api-keys", "API keys", Role.ADMIN),
    ("/audit", "Audit", Role.ADMIN),
    ("/usage", "Usage", Role.ADMIN),
    ("/plan", "Plan", Role.ADMIN),
)


# A route driver's whole navigation: every other page sends them back to their routes.
DRIVER_NAV: tuple[tuple[str, str], ...] = (("/vending/routes", "My routes"),)


def nav_links(request: Request, principal: Principal) -> list[tuple[str, str]]:
    """The navigation links this user may follow, among the pages the app serves."""
    served: frozenset[str] | None = getattr(request.app.state, "page_paths", None)
    if served is None:
        paths = [path for path, _, _ in NAV] + [path for path, _ in DRIVER_NAV]
        served = frozenset(path for path in paths if _serves(request.app.router, path))
        request.app.state.page_paths = served
    if principal.is_driver:
        return [(path, label) for path, label in DRIVER_NAV if path in served]
    return [(path, label) for path, label, role in NAV if path in served and principal.has(role)]


def _serves(router: Router, path: str) -> bool:
    """True if a GET of `path` reaches a route (not the 404 handler)."""
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    return any(route.matches(scope)[0] is Match.FULL for route in router.routes)


def render(
    context: dict[str, object], template: str, *, status_code: int = 200, **values: Any
) -> HTMLResponse:
    """A page (or an htmx fragment) rendered with the signed-in user's context."""
    request = context["request"]
    assert isinstance(request, Request)
    nav = nav_links(request, principal_of(context))
    return templates.TemplateResponse(
        request,
        template,
        {**context, "nav": nav, "here": request.url.path, **values},
        status_code=status_code,
    )


def principal_of(context: dict[str, object]) -> Principal:
    """The signed-in principal of a page context."""
    principal = context["principal"]
    assert isinstance(principal, Principal)
    return principal


def is_fragment(request: Request) -> bool:
    """An htmx request wants only the part of the page it swaps."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get(
        "HX-History-Restore-Request"
    )


async def page_writer(
    request: Request, settings: SettingsDep, principal: PagePrincipal
) -> Principal:
    """The signed-in user of a page write, which must carry the session's CSRF token
    (the X-CSRF-Token header htmx sends, or the form field csrf_token)."""
    await _check_csrf(request, settings, principal)
    return principal


async def any_page_writer(
    request: Request, settings: SettingsDep, principal: AnyPagePrincipal
) -> Principal:
    """page_writer for the writes a route driver may make (their service orders)."""
    await _check_csrf(request, settings, principal)
    return principal


async def _check_csrf(request: Request, settings: SettingsDep, principal: Principal) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        field = form.get("csrf_token")
        sent = field if isinstance(field, str) else ""
    require_csrf(settings, principal, sent)


def require_csrf(settings: Settings, principal: Principal, sent: str | None) -> None:
    """The token a page write sent (header or form field) must be the session's: for the
    writes that parse their own body (a file upload), where page_writer cannot read it."""
    expected = csrf_token(settings.secret_key.get_secret_value(), principal.session_id)
    if not same(sent or "", expected):
        raise Forbidden(f"a page write needs the {CSRF_HEADER} header", code="CSRF_FAILED")


PageWriter = Annotated[Principal, Depends(page_writer)]
AnyPageWriter = Annotated[Principal, Depends(any_page_writer)]
