"""Browser sign-in: the login form, the session cookie, CSRF, sign-out."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleetcore.auth import sessions
from fleetcore.auth.deps import SESSION_COOKIE, csrf_token, user_principal
from fleetcore.auth.ratelimit import LoginLimiter
from fleetcore.auth.security import same
from fleetcore.dashboard.context import page_context
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.errors import Forbidden, RateLimited, Unauthorized
from fleetcore.templating import templates
from fleetcore.web.cookies import set_form_csrf_cookie, set_session_cookie

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "fleetcore_login_csrf"


def _safe_next(value: str | None) -> str:
    """Only local paths, so the form cannot be used to redirect elsewhere."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/dashboard"


def _login_form(
    request: Request,
    *,
    error: str | None = None,
    email: str = "",
    next_path: str = "/dashboard",
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request,
        "auth/login.html",
        {"error": error, "email": email, "next": next_path, "csrf_token": token, "user": None},
        status_code=status,
        headers=headers,
    )
    set_form_csrf_cookie(response, request, name=LOGIN_CSRF_COOKIE, token=token, path="/auth/login")
    return response


@router.get("/auth/login")
async def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return _login_form(request, next_path=_safe_next(next))


@router.post("/auth/login")
async def login_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    remember_me: Annotated[str | None, Form(max_length=8)] = None,
    next: Annotated[str | None, Form(max_length=2048)] = None,
) -> Response:
    """Check the form; on success set the HTTP-only session cookie and go to the dashboard."""
    next_path = _safe_next(next)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not same(expected, csrf_token):
        return _login_form(
            request,
            error="The form expired; please try again.",
            email=email,
            next_path=next_path,
            status=403,
        )
    remember = bool(remember_me)
    ttl_s = settings.remember_me_ttl_s if remember else settings.session_cookie_ttl_s
    limiter: LoginLimiter = request.app.state.login_limiter
    try:
        issued = await sessions.login(
            session,
            settings,
            limiter,
            email=email,
            password=password,
            access_ttl=timedelta(seconds=ttl_s),
        )
    except RateLimited as exc:
        return _login_form(
            request,
            error="Too many failed attempts. Try again later.",
            email=email,
            next_path=next_path,
            status=429,
            headers=exc.headers,
        )
    except Unauthorized:
        return _login_form(
            request,
            error="The email or password is wrong.",
            email=email,
            next_path=next_path,
            status=401,
        )
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, request, issued.access_token, max_age=ttl_s if remember else None)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/auth/login")
    return response


@router.get("/auth/logout")
async def logout_form(context: Annotated[dict[str, object], Depends(page_context)]) -> HTMLResponse:
    """A confirmation button: signing out changes state, so it is a POST."""
    return templates.TemplateResponse(context["request"], "auth/logout.html", context)  # type: ignore[arg-type]


@router.post("/auth/logout")
async def logout_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    csrf_token_field: Annotated[str, Form(alias="csrf_token", max_length=128)] = "",
) -> Response:
    """End the session and clear the cookie."""
    response = RedirectResponse("/auth/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return response
    secret = settings.secret_key.get_secret_value()
    try:
        principal = await user_principal(session, secret, cookie, via_cookie=True)
    except Unauthorized:
        return response  # already ended: just clear the cookie
    if not same(csrf_token_field, csrf_token(secret, principal.session_id)):
        raise Forbidden("the sign-out form is missing its CSRF token", code="CSRF_FAILED")
    await sessions.logout(session, principal, refresh_token=None)
    return response
