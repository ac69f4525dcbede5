"""Account API: sign-up and verification, password reset, invitations."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fastapi import APIRouter, Request, Response, status

from fleetcore.accounts import invitations, service
from fleetcore.accounts.deps import ContextDep, limit
from fleetcore.accounts.models import AccountLink
from fleetcore.accounts.schemas import (
    Accepted,
    AcceptIn,
    InvitationIn,
    InvitationOut,
    RegisterIn,
    ResetIn,
    ResetRequestIn,
    VerifiedOut,
    VerifyIn,
)
from fleetcore.auth.deps import PrincipalDep
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import TokenOut
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.web.errors import documented_errors

router = APIRouter(prefix="/api/v1", tags=["accounts"])


def _invitation(row: AccountLink) -> InvitationOut:
    return InvitationOut(
        id=row.id,
        email=row.email,
        role=Role(row.role or "viewer"),
        status=invitations.status_of(row),
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


@router.post(
    "/auth/register",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Sign up: a new organization and its admin, after email verification",
    responses=documented_errors(403, 429),
)
async def register(
    body: RegisterIn, request: Request, session: SessionDep, ctx: ContextDep
) -> Accepted:
    """The same answer whether or not the address has an account (the mail differs);
    403 SIGNUP_CLOSED unless FLEETCORE_SIGNUP=open."""
    if ctx.settings.signup == "open":  # closed: answered below without counting
        await limit(request, body.email)
    await service.register(
        session,
        ctx,
        organization_name=body.organization_name,
        email=body.email,
        password=body.password,
    )
    return Accepted()


@router.post(
    "/auth/verify",
    summary="Follow a sign-up link: create the organization and its admin",
    responses=documented_errors(409, 422, 429),
)
async def verify(
    body: VerifyIn, request: Request, session: SessionDep, ctx: ContextDep
) -> VerifiedOut:
    """422 INVALID_LINK for a forged, used or expired link; sign in afterwards."""
    await limit(request)
    user = await service.verify(session, ctx, token=body.token)
    assert user.organization_id is not None
    return VerifiedOut(user_id=user.id, organization_id=user.organization_id, email=user.email)


@router.post(
    "/auth/password-reset",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for a password reset link",
    responses=documented_errors(429),
)
async def request_reset(
    body: ResetRequestIn, request: Request, session: SessionDep, ctx: ContextDep
) -> Accepted:
    """The same answer whether or not the address has an account."""
    await limit(request, body.email)
    await service.request_reset(session, ctx, email=body.email)
    return Accepted()


@router.post(
    "/auth/password-reset/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password from a reset link",
    responses=documented_errors(422, 429),
)
async def reset_password(
    body: ResetIn, request: Request, session: SessionDep, ctx: ContextDep
) -> Response:
    """Every session and refresh token of the user ends."""
    await limit(request)
    await service.reset_password(session, ctx, token=body.token, password=body.password)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/invitations",
    status_code=status.HTTP_201_CREATED,
    summary="Invite an address to the organization with a role",
)
async def create_invitation(
    body: InvitationIn, session: SessionDep, principal: PrincipalDep, ctx: ContextDep
) -> InvitationOut:
    """Admins; the same answer whether or not the address has an account anywhere."""
    row = await invitations.invite(session, ctx, principal, email=body.email, role=body.role)
    return _invitation(row)


@router.get("/invitations", summary="List the organization's invitations")
async def list_invitations(session: SessionDep, principal: PrincipalDep) -> list[InvitationOut]:
    """Admins; newest first, never the links."""
    return [_invitation(r) for r in await invitations.list_invitations(session, principal)]


@router.delete("/invitations/{invitation_id:uuid}", summary="Revoke an invitation")
async def revoke_invitation(
    invitation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> InvitationOut:
    """Its link stops working at once."""
    return _invitation(await invitations.revoke(session, principal, invitation_id))


@router.post(
    "/invitations/accept",
    summary="Accept an invitation: set a password and sign in",
    responses={
        202: {"model": Accepted, "description": "the address has an account: see the mail"},
        **documented_errors(422, 429),
    },
)
async def accept_invitation(
    body: AcceptIn,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    ctx: ContextDep,
) -> TokenOut | Accepted:
    """Tokens of the new user's session; 202 (mail sent) if the address has an account."""
    await limit(request)
    issued = await invitations.accept(
        session,
        ctx,
        token=body.token,
        password=body.password,
        access_ttl=timedelta(seconds=settings.access_token_ttl_s),
    )
    if issued is None:
        response.status_code = status.HTTP_202_ACCEPTED
        return Accepted()
    return TokenOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=settings.access_token_ttl_s,
    )
