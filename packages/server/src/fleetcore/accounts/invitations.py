"""Invitations: an admin invites an address with a role; the link's holder sets a password
and is signed in to the inviting organization.

Creating one answers the same whether or not the address has an account anywhere (an email
is unique across the platform, so "taken" would tell one organization about another's
users). Accepting spends the link either way; for an address that already has an account,
no second one is made: its owner gets a mail saying so, and the answer is "check your email".
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.accounts.mail import AccountMail
from fleetcore.accounts.models import AccountLink, Purpose
from fleetcore.accounts.service import (
    Context,
    InvalidLink,
    _audit_bad_link,
    new_link,
    normalize,
    take,
    user_by_email,
)
from fleetcore.audit import service as audit
from fleetcore.auth import sessions
from fleetcore.auth.models import Organization, User
from fleetcore.auth.principal import Principal, Role
from fleetcore.auth.security import hash_password
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.errors import Conflict, NotFound
from fleetcore.plans import service as plans
from fleetcore.plans.limits import Limit


def status_of(row: AccountLink) -> str:
    """pending, accepted, revoked or expired."""
    if row.used_at is not None:
        return "accepted"
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if row.expires_at <= utcnow() else "pending"


async def invite(
    session: AsyncSession, ctx: Context, principal: Principal, *, email: str, role: Role
) -> AccountLink:
    """Invite an address to the caller's organization (admins); an earlier pending
    invitation of the address is replaced."""
    principal.require(Role.ADMIN)
    org = await session.get(Organization, principal.org_id)
    assert org is not None  # the principal's own
    await plans.admit(session, org.id, Limit.USERS)  # 403 PLAN_LIMIT: no room to invite
    email = normalize(email)
    await session.execute(
        update(AccountLink)
        .where(
            AccountLink.organization_id == org.id,
            AccountLink.purpose == Purpose.INVITE.value,
            AccountLink.email == email,
            AccountLink.used_at.is_(None),
            AccountLink.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    row, token = new_link(
        ctx,
        Purpose.INVITE,
        email=email,
        ttl_s=ctx.settings.invitation_ttl_s,
        organization_id=org.id,
        role=role.value,
        created_by=principal.user_id,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        action="invitation.create",
        actor=principal,
        organization_id=org.id,
        target_type="invitation",
        target_id=row.id,
        details={"email": email, "role": role.value},
    )
    await session.commit()
    link = f"{ctx.base_url}/auth/invitation?token={token}"
    days = ctx.settings.invitation_ttl_s // 86400
    ctx.mailer.send(
        AccountMail(
            to=email,
            kind="invite",
            subject=f"You are invited to {org.name} on Fleetcore",
            body=(
                f"You are invited to join {org.name} on Fleetcore as {role.value}.\n\n"
                f"Choose your password here:\n\n{link}\n\nThe link works once, for {days} "
                "days. If you did not expect it, ignore this mail.\n"
            ),
            link=link,
        )
    )
    return row


async def list_invitations(session: AsyncSession, principal: Principal) -> list[AccountLink]:
    """The caller's organization's invitations, newest first (admins)."""
    principal.require(Role.ADMIN)
    query = (
        select(AccountLink)
        .where(
            AccountLink.organization_id == principal.org_id,
            AccountLink.purpose == Purpose.INVITE.value,
        )
        .order_by(AccountLink.created_at.desc())
        .limit(500)
    )
    return list((await session.scalars(query)).all())


async def revoke(
    session: AsyncSession, principal: Principal, invitation_id: uuid.UUID
) -> AccountLink:
    """Revoke a pending invitation; its link stops working (admins)."""
    principal.require(Role.ADMIN)
    row = await session.get(AccountLink, invitation_id)
    if (
        row is None
        or row.purpose != Purpose.INVITE.value
        or row.organization_id != principal.org_id
    ):
        raise NotFound("invitation not found", code="INVITATION_NOT_FOUND")
    if row.used_at is None and row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(
            session,
            action="invitation.revoke",
            actor=principal,
            organization_id=row.organization_id,
            target_type="invitation",
            target_id=row.id,
            details={"email": row.email},
        )
        await session.commit()
    return row


async def accept(
    session: AsyncSession, ctx: Context, *, token: str, password: str, access_ttl: timedelta
) -> sessions.IssuedSession | None:
    """Follow an invitation: a new user, signed in; None when the address has an account
    (its owner is mailed instead)."""
    password_hash = await hash_password(password)  # before the check: same time either way
    try:
        row = await take(session, ctx, Purpose.INVITE, token)
    except InvalidLink:
        await _audit_bad_link(session, "invitation.accept")
        raise
    org = await session.get(Organization, row.organization_id)
    if org is None:  # deleted since (the cascade would have removed the row; belt and braces)
        await session.rollback()
        raise InvalidLink
    if await user_by_email(session, row.email) is not None:
        audit.record(
            session,
            action="invitation.accept",
            actor=None,
            outcome="failure",
            organization_id=org.id,
            target_type="invitation",
            target_id=row.id,
            details={"reason": "email_has_account"},
        )
        await session.commit()
        ctx.mailer.send(
            AccountMail(
                to=row.email,
                kind="invite_taken",
                subject=f"Your invitation to {org.name}",
                body=(
                    f"You were invited to {org.name} on Fleetcore, but this address already "
                    "has an account, and an address belongs to one organization. Ask the "
                    "inviting administrator to invite another address.\n"
                ),
            )
        )
        return None
    await plans.admit(session, org.id, Limit.USERS)  # full since the invitation: 403
    user = User(
        organization_id=org.id,
        email=row.email,
        password_hash=password_hash,
        role=row.role or Role.VIEWER.value,
        last_login_at=utcnow(),
    )
    session.add(user)
    # Two links of one address followed at once: the second finds the first's user.
    await flush_or_conflict(
        session, Conflict("this address already has an account", code="EMAIL_HAS_ACCOUNT")
    )
    audit.record(
        session,
        action="invitation.accept",
        actor=None,
        actor_type="user",
        actor_id=str(user.id),
        organization_id=org.id,
        target_type="invitation",
        target_id=row.id,
        details={"user_id": str(user.id), "role": user.role},
    )
    issued = await sessions.issue_session(session, ctx.settings, user, access_ttl=access_ttl)
    await session.commit()
    return issued
