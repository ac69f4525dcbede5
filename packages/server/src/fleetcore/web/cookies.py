"""Cookies the pages set: when they are Secure, the session cookie itself (one shape for
every page that signs someone in: the sign-in form, an accepted invitation), and the CSRF
cookie of the forms shown to someone not signed in (double submit: the form carries the
same token)."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.config import Settings


def secure_cookies(request: Request) -> bool:
    """Secure in production always: a cookie sent once over plain HTTP is a session anyone
    on the path has; elsewhere when the request came over HTTPS."""
    settings: Settings = request.app.state.settings
    return settings.environment == "production" or request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, token: str, *, max_age: int | None = None
) -> None:
    """The HTTP-only session cookie (SameSite=Lax: links into the site keep the session)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
        max_age=max_age,
    )


FORM_CSRF_TTL_S = 3600  # a form left open longer is answered "expired, try again"


def set_form_csrf_cookie(
    response: Response, request: Request, *, name: str, token: str, path: str
) -> None:
    """The CSRF cookie of an anonymous form (SameSite=Strict, scoped to the form's path)."""
    response.set_cookie(
        name,
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path=path,
        max_age=FORM_CSRF_TTL_S,
    )
