"""Identity API: sign-in, sessions, organizations, users, API keys."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request, Response, status

from fleetcore.auth import api_keys, sessions, users
from fleetcore.auth.deps import AnyPrincipalDep, OptionalPrincipalDep, PrincipalDep
from fleetcore.auth.models import Organization
from fleetcore.auth.ratelimit import LoginLimiter
from fleetcore.auth.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    ChangePasswordIn,
    LoginIn,
    LogoutIn,
    MeOut,
    OrganizationIn,
    OrganizationOut,
    RefreshIn,
    TokenOut,
    UserIn,
    UserOut,
    UserPatch,
)
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page, page_of
from fleetcore.web.errors import documented_errors

router = APIRouter(prefix="/api/v1", tags=["identity"])


def _tokens(issued: sessions.IssuedSession, ttl_s: int) -> TokenOut:
    return TokenOut(
        access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=ttl_s
    )


@router.post(
    "/auth/login", summary="Sign in with email and password", responses=documented_errors(429)
)
async def login(
    body: LoginIn, request: Request, session: SessionDep, settings: SettingsDep
) -> TokenOut:
    """Access and refresh tokens; 401 for any bad credential, 429 after too many failures."""
    limiter: LoginLimiter = request.app.state.login_limiter
    issued = await sessions.login(
        session, settings, limiter, email=body.email, password=body.password
    )
    return _tokens(issued, settings.access_token_ttl_s)


@router.post("/auth/refresh", summary="Rotate a refresh token")
async def refresh(body: RefreshIn, session: SessionDep, settings: SettingsDep) -> TokenOut:
    """A new token pair; the presented refresh token is spent, and reusing it ends the session."""
    issued = await sessions.refresh(session, settings, refresh_token=body.refresh_token)
    return _tokens(issued, settings.access_token_ttl_s)


@router.post(
    "/auth/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End the session",
    # Credentials are optional ({}): the refresh token in the body alone ends its session.
    openapi_extra={"security": [{}]},
)
async def logout(
    session: SessionDep, principal: OptionalPrincipalDep, body: LogoutIn | None = None
) -> Response:
    """Revokes the session of the access token and/or of the refresh token given."""
    await sessions.logout(session, principal, refresh_token=body.refresh_token if body else None)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie("fleetcore_session", path="/")
    return response


@router.get("/auth/me", summary="The signed-in user")
async def me(session: SessionDep, principal: AnyPrincipalDep) -> MeOut:
    """The caller's account and organization."""
    user = await users.get_user(session, principal, principal.user_id or uuid.UUID(int=0))
    out = MeOut.model_validate(user)
    if user.organization_id is not None:
        org = await session.get(Organization, user.organization_id)
        out.organization = OrganizationOut.model_validate(org)
    return out


@router.post(
    "/auth/change-password", status_code=status.HTTP_204_NO_CONTENT, summary="Change own password"
)
async def change_password(
    body: ChangePasswordIn, session: SessionDep, principal: AnyPrincipalDep
) -> None:
    """Other sessions of the user end; this one continues."""
    await sessions.change_password(
        session, principal, current=body.current_password, new=body.new_password
    )


@router.post(
    "/organizations", status_code=status.HTTP_201_CREATED, summary="Create an organization"
)
async def create_organization(
    body: OrganizationIn, session: SessionDep, principal: PrincipalDep
) -> OrganizationOut:
    """Platform superusers only."""
    org = await users.create_organization(session, principal, data=body)
    return OrganizationOut.model_validate(org)


@router.get("/organizations", summary="List organizations")
async def list_organizations(session: SessionDep, principal: PrincipalDep) -> list[OrganizationOut]:
    """All for a superuser; one's own otherwise."""
    orgs = await users.list_organizations(session, principal)
    return [OrganizationOut.model_validate(o) for o in orgs]


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Create a user")
async def create_user(body: UserIn, session: SessionDep, principal: PrincipalDep) -> UserOut:
    """Admins create users in their organization; superusers in any."""
    user = await users.create_user(session, principal, data=body)
    return UserOut.model_validate(user)


@router.get("/users", summary="List users")
async def list_users(
    session: SessionDep, principal: PrincipalDep, cursor: CursorQuery = None, limit: LimitQuery = 50
) -> Page[UserOut]:
    """Users of the caller's organization, by email (admins)."""
    rows = await users.list_users(session, principal, cursor=cursor, limit=limit)
    items, next_cursor = page_of(rows, limit=limit, sort_attr="email")
    return Page(items=[UserOut.model_validate(u) for u in items], next_cursor=next_cursor)


@router.get("/users/{user_id:uuid}", summary="Get a user")
async def get_user(user_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> UserOut:
    """Admins, or the user themself."""
    return UserOut.model_validate(await users.get_user(session, principal, user_id))


@router.patch("/users/{user_id:uuid}", summary="Change a user's role or deactivate them")
async def update_user(
    user_id: uuid.UUID, body: UserPatch, session: SessionDep, principal: PrincipalDep
) -> UserOut:
    """Deactivation ends the user's sessions at once."""
    user = await users.update_user(session, principal, user_id, data=body)
    return UserOut.model_validate(user)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_api_key(
    body: ApiKeyIn, session: SessionDep, principal: PrincipalDep
) -> ApiKeyCreated:
    """The key is in this answer only; send it as X-API-Key."""
    key, raw = await api_keys.create_api_key(session, principal, data=body)
    return ApiKeyCreated.model_validate({**ApiKeyOut.model_validate(key).model_dump(), "key": raw})


@router.get("/api-keys", summary="List API keys")
async def list_api_keys(session: SessionDep, principal: PrincipalDep) -> list[ApiKeyOut]:
    """Never the keys themselves."""
    return [ApiKeyOut.model_validate(k) for k in await api_keys.list_api_keys(session, principal)]


@router.delete("/api-keys/{key_id:uuid}", summary="Revoke an API key")
async def revoke_api_key(
    key_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ApiKeyOut:
    """It stops working at once."""
    return ApiKeyOut.model_validate(await api_keys.revoke_api_key(session, principal, key_id))
