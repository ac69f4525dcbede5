"""Account pages: sign-up, verification, forgotten password, invitations (accept, invite).

The anonymous forms carry a CSRF token that must match a cookie (as the sign-in form does):
another site cannot post them in a visitor's name. A link from a mail opens a page with a
button, and only the button's POST spends the link: mail scanners that fetch every link
would otherwise use single-use links before their owner does.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from fleetcore.accounts import invitations, service
from fleetcore.accounts.deps import ContextDep, limit
from fleetcore.accounts.schemas import AcceptIn, InvitationIn, RegisterIn, ResetIn
from fleetcore.auth.principal import Role
from fleetcore.auth.security import same
from fleetcore.dashboard.web import PageWriter
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.errors import DomainError, RateLimited
from fleetcore.templating import templates
from fleetcore.web.cookies import set_form_csrf_cookie, set_session_cookie

_LinkAndPassword = TypeVar("_LinkAndPassword", ResetIn, AcceptIn)

router = APIRouter(include_in_schema=False)
CSRF_COOKIE = "fleetcore_account_csrf"
CHECK_EMAIL = (
    "Check your email: if this request can go ahead, a link is on its way. "
    "It works once and for a limited time."
)


def _page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **values: Any,
) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request,
        template,
        {"user": None, "csrf_token": token, **values},
        status_code=status,
        headers=headers,
    )
    set_form_csrf_cookie(response, request, name=CSRF_COOKIE, token=token, path="/auth")
    return response


def _message(request: Request, heading: str, message: str, **values: Any) -> HTMLResponse:
    return _page(request, "accounts/message.html", heading=heading, message=message, **values)


def _csrf_ok(request: Request, sent: str) -> bool:
    expected = request.cookies.get(CSRF_COOKIE, "")
    return bool(expected) and same(expected, sent)


def _expired_form(request: Request) -> HTMLResponse:
    return _page(
        request,
        "accounts/message.html",
        status=403,
        heading="The form expired",
        message="The form expired; go back and try again.",
    )


def _refused(request: Request, exc: DomainError, heading: str) -> HTMLResponse:
    if isinstance(exc, RateLimited):
        message = "Too many requests. Try again later."
    elif isinstance(exc, service.InvalidLink):
        message = "This link is not valid any more (used, expired or revoked). Ask for a new one."
    else:
        message = exc.message[:1].upper() + exc.message[1:] + "."
    return _page(
        request,
        "accounts/message.html",
        status=exc.status_code,
        headers=exc.headers,
        heading=heading,
        message=message,
    )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]).replace("_", " ") if error["loc"] else "form"
    return f"{field}: {error['msg']}"


# -- sign-up --------------------------------------------------------------------------------
@router.get("/auth/register")
async def register_form(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The sign-up form, or the notice that sign-up is closed."""
    closed = settings.signup != "open"
    return _page(
        request,
        "accounts/register.html",
        status=403 if closed else 200,
        closed=closed,
        organization_name="",
        email="",
    )


@router.post("/auth/register")
async def register_submit(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    organization_name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Start the sign-up; the same "check your email" page whether or not the address is taken."""
    if ctx.settings.signup != "open":
        return _page(request, "accounts/register.html", status=403, closed=True)
    if not _csrf_ok(request, csrf_token):
        return _expired_form(request)
    try:
        data = RegisterIn(organization_name=organization_name, email=email, password=password)
    except ValidationError as exc:
        return _page(
            request,
            "accounts/register.html",
            status=422,
            closed=False,
            error=_first_error(exc),
            organization_name=organization_name,
            email=email,
        )
    try:
        await limit(request, data.email)
        await service.register(
            session,
            ctx,
            organization_name=data.organization_name,
            email=data.email,
            password=data.password,
        )
    except DomainError as exc:
        return _refused(request, exc, "Sign-up")
    return _message(request, "Check your email", CHECK_EMAIL)


@router.get("/auth/verify")
async def verify_form(request: Request, token: str = "") -> HTMLResponse:
    """The sign-up link's page: a button confirms (the link is spent by the POST only)."""
    return _page(
        request,
        "accounts/confirm.html",
        heading="Verify your email",
        message="Confirm to create your organization.",
        action="/auth/verify",
        token=token[:200],
        button="Verify and create",
    )


@router.post("/auth/verify")
async def verify_submit(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Create the organization and its admin; then sign in."""
    if not _csrf_ok(request, csrf_token):
        return _expired_form(request)
    try:
        await limit(request)
        await service.verify(session, ctx, token=token)
    except DomainError as exc:
        return _refused(request, exc, "Verify your email")
    return _message(
        request,
        "Email verified",
        "Your email is verified and your organization is ready.",
        link="/auth/login",
        link_label="Sign in",
    )


# -- password reset -------------------------------------------------------------------------
@router.get("/auth/forgot-password")
async def forgot_form(request: Request) -> HTMLResponse:
    """Ask for a reset link by email."""
    return _page(
        request,
        "accounts/confirm.html",
        heading="Forgot your password?",
        message="We will mail you a link to choose a new one.",
        action="/auth/forgot-password",
        token="",
        email_field=True,
        email="",
        button="Send the link",
    )


@router.post("/auth/forgot-password")
async def forgot_submit(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    email: Annotated[str, Form(max_length=320)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """The same "check your email" page whether or not the address has an account."""
    if not _csrf_ok(request, csrf_token):
        return _expired_form(request)
    try:
        await limit(request, email)
        if "@" in email:  # the API validates strictly; the page just skips nonsense
            await service.request_reset(session, ctx, email=email)
    except DomainError as exc:
        return _refused(request, exc, "Forgot your password?")
    return _message(request, "Check your email", CHECK_EMAIL)


@router.get("/auth/reset-password")
async def reset_form(request: Request, token: str = "") -> HTMLResponse:
    """The reset link's page: choose a new password."""
    return _password_form(request, token=token, action="/auth/reset-password")


def _password_form(
    request: Request, *, token: str, action: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    invite = action == "/auth/invitation"
    return _page(
        request,
        "accounts/confirm.html",
        status=status,
        heading="Join your organization" if invite else "Choose a new password",
        message="Choose your password (12 characters or more)."
        if invite
        else "Choosing one signs you out everywhere.",
        action=action,
        token=token[:200],
        password_field=True,
        error=error,
        button="Set password" if invite else "Change password",
    )


def _password_submission(
    request: Request,
    model: type[_LinkAndPassword],
    token: str,
    password: str,
    csrf_token: str,
    *,
    action: str,
) -> _LinkAndPassword | HTMLResponse:
    """A link's password form, checked: its data, or the page to answer instead (expired
    form, or the form again naming what is wrong)."""
    if not _csrf_ok(request, csrf_token):
        return _expired_form(request)
    try:
        return model(token=token, password=password)
    except ValidationError as exc:
        return _password_form(
            request, token=token, action=action, error=_first_error(exc), status=422
        )


@router.post("/auth/reset-password")
async def reset_submit(
    request: Request,
    session: SessionDep,
    ctx: ContextDep,
    token: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Set the new password; every session of the user ends."""
    data = _password_submission(
        request, ResetIn, token, password, csrf_token, action="/auth/reset-password"
    )
    if isinstance(data, Response):
        return data
    try:
        await limit(request)
        await service.reset_password(session, ctx, token=data.token, password=data.password)
    except DomainError as exc:
        return _refused(request, exc, "Choose a new password")
    return _message(
        request,
        "Password changed",
        "Your password is changed and every session of yours has ended.",
        link="/auth/login",
        link_label="Sign in",
    )


# -- invitations ----------------------------------------------------------------------------
@router.get("/auth/invitation")
async def invitation_form(request: Request, token: str = "") -> HTMLResponse:
    """The invitation link's page: choose a password."""
    return _password_form(request, token=token, action="/auth/invitation")


@router.post("/auth/invitation")
async def invitation_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    ctx: ContextDep,
    token: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    """Create the user and sign them in (the session cookie), or say to check the mail."""
    data = _password_submission(
        request, AcceptIn, token, password, csrf_token, action="/auth/invitation"
    )
    if isinstance(data, Response):
        return data
    ttl_s = settings.session_cookie_ttl_s
    try:
        await limit(request)
        issued = await invitations.accept(
            session,
            ctx,
            token=data.token,
            password=data.password,
            access_ttl=timedelta(seconds=ttl_s),
        )
    except DomainError as exc:
        return _refused(request, exc, "Join your organization")
    if issued is None:
        return _message(request, "Check your email", CHECK_EMAIL)
    response = RedirectResponse("/dashboard", status_code=303)
    set_session_cookie(response, request, issued.access_token)
    response.delete_cookie(CSRF_COOKIE, path="/auth")
    return response


@router.post("/users/invitations")
async def invite_submit(
    session: SessionDep,
    ctx: ContextDep,
    principal: PageWriter,
    email: Annotated[str, Form(max_length=320)] = "",
    role: Annotated[str, Form(max_length=16)] = "viewer",
) -> Response:
    """Admins: invite an address (the users page lists it)."""
    try:
        data = InvitationIn(email=email, role=Role(role) if role in set(Role) else Role.VIEWER)
    except ValidationError:
        return RedirectResponse("/users?invite_error=email", status_code=303)
    await invitations.invite(session, ctx, principal, email=data.email, role=data.role)
    return RedirectResponse("/users", status_code=303)


@router.post("/users/invitations/{invitation_id:uuid}/revoke")
async def revoke_submit(
    invitation_id: uuid.UUID, session: SessionDep, principal: PageWriter
) -> Response:
    """Admins: revoke a pending invitation."""
    await invitations.revoke(session, principal, invitation_id)
    return RedirectResponse("/users", status_code=303)
