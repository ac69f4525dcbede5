"""Resolving the caller: API key, bearer token or session cookie, to a Principal."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.api_limits import ApiLimiter
from fleetcore.auth.models import ApiKey, RefreshToken, User
from fleetcore.auth.principal import PermissionDenied, Principal, PrincipalKind, Role
from fleetcore.auth.security import decode_access_token, same, sign, token_hash
from fleetcore.db import utcnow
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.errors import Forbidden, Unauthorized
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter

SESSION_COOKIE = "fleetcore_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writing last_used_at on every call would turn reads into writes; once a minute is enough.
API_KEY_TOUCH_INTERVAL = timedelta(seconds=60)

_bearer = HTTPBearer(auto_error=False, description="access token from /api/v1/auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="organization API key")


def csrf_token(secret: str, session_id: object) -> str:
    """The CSRF token of a browser session: forms and cookie-authenticated writes send it."""
    return sign(secret, f"csrf:{session_id}")


async def _from_api_key(session: AsyncSession, raw: str) -> Principal:
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == token_hash(raw)))
    now = utcnow()
    if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
        raise Unauthorized("the API key is not valid", code="INVALID_API_KEY")
    if key.last_used_at is None or now - key.last_used_at > API_KEY_TOUCH_INTERVAL:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        await session.commit()
    return Principal(
        kind=PrincipalKind.API_KEY,
        subject_id=key.id,
        organization_id=key.organization_id,
        role=Role(key.role),
    )


async def user_principal(
    session: AsyncSession, secret: str, token: str, *, via_cookie: bool
) -> Principal:
    """The principal of a valid access token whose user is active and session not revoked."""
    claims = decode_access_token(secret, token)
    # The session must be live AND the user's own: a token naming another user's id on
    # the caller's live session is forged, whatever its signature. One query for both
    # (this runs on every request).
    live = (
        exists()
        .where(
            RefreshToken.family_id == claims.session_id,
            RefreshToken.user_id == User.id,
            RefreshToken.revoked_at.is_(None),
        )
        .label("live")
    )
    row = (await session.execute(select(User, live).where(User.id == claims.user_id))).first()
    if row is None or not row[0].is_active:
        raise Unauthorized("the account is not active", code="INVALID_TOKEN")
    user, session_live = row
    if not session_live:
        raise Unauthorized("the session has ended; sign in again", code="SESSION_REVOKED")
    return Principal(
        kind=PrincipalKind.USER,
        subject_id=user.id,
        organization_id=user.organization_id,
        role=Role(user.role),
        is_superuser=user.is_superuser,
        session_id=claims.session_id,
        via_cookie=via_cookie,
    )


async def optional_principal(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal | None:
    """The caller if credentials were presented (invalid ones are 401), else None."""
    secret = settings.secret_key.get_secret_value()
    principal: Principal | None = None
    if api_key:
        principal = await _from_api_key(session, api_key)
    elif bearer is not None:
        principal = await user_principal(session, secret, bearer.credentials, via_cookie=False)
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = await user_principal(session, secret, cookie, via_cookie=True)
        if request.method in UNSAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not same(sent, csrf_token(secret, principal.session_id)):
                raise Forbidden(
                    f"a cookie-authenticated {request.method} needs the {CSRF_HEADER} header",
                    code="CSRF_FAILED",
                )
    request.state.principal = principal
    if principal is not None and principal.organization_id is not None:
        meter: UsageMeter | None = getattr(request.app.state, "usage_meter", None)
        if meter is not None:
            meter.count(
                principal.organization_id, UsageKind.API_REQUESTS, transport=principal.kind.value
            )
    # The API rate limits, once the caller is known; off (the default): these checks only
    # (a plan with an API request limit turns them on: fleetcore.plans).
    if principal is not None and (
        settings.api_rate_limited or request.app.state.plan_cache.api_limited
    ):
        await _take_api_limits(request, response, principal)
    return principal


def rate_limit_headers(request: Request) -> dict[str, str] | None:
    """The RateLimit headers of this request, for a route that builds its own Response (the
    sub-response's headers reach only answers FastAPI builds from a return value)."""
    headers: dict[str, str] | None = getattr(request.state, "rate_limit_headers", None)
    return headers


async def _take_api_limits(request: Request, response: Response, principal: Principal) -> None:
    limiter: ApiLimiter = request.app.state.api_limiter
    headers = await limiter.take(principal)  # RateLimited (429) when a window is full
    response.headers.update(headers)  # the answer built from the route's return value
    # An error answer (404, 409, ...) is built by the error handler: it adds these.
    request.state.rate_limit_headers = headers


async def require_any_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """The caller, drivers included; 401 without credentials."""
    if principal is None:
        raise Unauthorized(
            "sign in: send a bearer token, the session cookie or an X-API-Key",
            code="NOT_AUTHENTICATED",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def require_principal(
    principal: Annotated[Principal, Depends(require_any_principal)],
) -> Principal:
    """The caller; a route driver is refused here, so a route must opt in to drivers."""
    # Deny by default: a route written later reaches drivers only if it asks for
    # AnyPrincipalDep and scopes what it answers (fleetcore.vending.scope).
    if principal.is_driver:
        raise PermissionDenied(
            "a driver reaches only the vending routes assigned to them", required="viewer"
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(require_principal)]
# Drivers included: only for routes that scope their answer for drivers or are their own.
AnyPrincipalDep = Annotated[Principal, Depends(require_any_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(optional_principal)]
