"""Sign-in sessions: login, rotating refresh tokens with reuse detection, logout."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import RefreshToken, User
from fleetcore.auth.principal import Principal
from fleetcore.auth.ratelimit import LoginLimiter
from fleetcore.auth.security import (
    hash_password,
    issue_access_token,
    new_token,
    token_hash,
    verify_password,
)
from fleetcore.config import Settings
from fleetcore.db import utcnow
from fleetcore.errors import Unauthorized
from fleetcore.request_context import current_client_address

BAD_CREDENTIALS = "the email or password is wrong"


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """Tokens of a new or rotated session."""

    access_token: str
    access_expires_at: datetime
    refresh_token: str
    session_id: uuid.UUID
    user: User


async def _issue(
    session: AsyncSession,
    settings: Settings,
    user: User,
    *,
    family_id: uuid.UUID,
    access_ttl: timedelta,
) -> IssuedSession:
    refresh = new_token("fcr_")
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=token_hash(refresh),
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_s),
        )
    )
    access, expires = issue_access_token(
        settings.secret_key.get_secret_value(),
        user_id=user.id,
        session_id=family_id,
        ttl=access_ttl,
    )
    return IssuedSession(access, expires, refresh, family_id, user)


async def issue_session(
    session: AsyncSession, settings: Settings, user: User, *, access_ttl: timedelta
) -> IssuedSession:
    """A new session of a user who proved themself another way (an invitation link)."""
    return await _issue(session, settings, user, family_id=uuid.uuid4(), access_ttl=access_ttl)


async def login(
    session: AsyncSession,
    settings: Settings,
    limiter: LoginLimiter,
    *,
    email: str,
    password: str,
    access_ttl: timedelta | None = None,
) -> IssuedSession:
    """Check the password (rate-limited, same answer and timing for unknown accounts)."""
    email = email.strip().lower()
    address = current_client_address()
    await limiter.attempt(email, address)  # before the check: concurrent guesses count too
    user = await session.scalar(select(User).where(func.lower(User.email) == email))
    valid = await verify_password(password, user.password_hash if user else None)
    if user is None or not valid or not user.is_active:
        await limiter.failed(address)
        audit.record(
            session,
            action="auth.login",
            actor=None,
            outcome="failure",
            organization_id=user.organization_id if user else None,
            target_type="user",
            target_id=user.id if user else None,
            details={"email": email, "reason": "inactive" if user and valid else "bad_credentials"},
        )
        await session.commit()
        raise Unauthorized(BAD_CREDENTIALS, code="BAD_CREDENTIALS")
    await limiter.succeeded(email, address)
    user.last_login_at = utcnow()
    issued = await _issue(
        session,
        settings,
        user,
        family_id=uuid.uuid4(),
        access_ttl=access_ttl or timedelta(seconds=settings.access_token_ttl_s),
    )
    audit.record(
        session,
        action="auth.login",
        actor=None,
        organization_id=user.organization_id,
        actor_type="user",
        actor_id=str(user.id),
        target_type="user",
        target_id=user.id,
    )
    await session.commit()
    return issued


async def revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    """End a session: every refresh token of the family stops working, and its access tokens."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def refresh(
    session: AsyncSession, settings: Settings, *, refresh_token: str
) -> IssuedSession:
    """Spend a refresh token for a new pair; a spent one presented again revokes its family."""
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))
    )
    now = utcnow()
    if row is None:
        raise Unauthorized("the refresh token is not valid", code="INVALID_REFRESH_TOKEN")
    user = await session.get(User, row.user_id)
    if row.used_at is not None and row.revoked_at is None:
        await revoke_family(session, row.family_id)
        audit.record(
            session,
            action="auth.refresh_reuse",
            actor=None,
            outcome="failure",
            organization_id=user.organization_id if user else None,
            actor_type="user",
            actor_id=str(row.user_id),
            target_type="session",
            target_id=row.family_id,
        )
        await session.commit()
        raise Unauthorized(
            "this refresh token was already used; the session is revoked",
            code="REFRESH_TOKEN_REUSED",
        )
    if row.revoked_at is not None or row.used_at is not None or row.expires_at <= now:
        raise Unauthorized("the refresh token is not valid", code="INVALID_REFRESH_TOKEN")
    if user is None or not user.is_active:
        raise Unauthorized("the account is not active", code="INVALID_REFRESH_TOKEN")
    # Spend it atomically: of two concurrent refreshes, only one wins.
    spent = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Unauthorized("this refresh token was already used", code="REFRESH_TOKEN_REUSED")
    issued = await _issue(
        session,
        settings,
        user,
        family_id=row.family_id,
        access_ttl=timedelta(seconds=settings.access_token_ttl_s),
    )
    await session.commit()
    return issued


async def logout(
    session: AsyncSession, principal: Principal | None, *, refresh_token: str | None
) -> None:
    """End the caller's session (and the one the refresh token belongs to, if given)."""
    families: set[uuid.UUID] = set()
    if principal is not None and principal.session_id is not None:
        families.add(principal.session_id)
    if refresh_token:
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash(refresh_token))
        )
        if row is not None and (principal is None or row.user_id == principal.user_id):
            families.add(row.family_id)
    for family in families:
        await revoke_family(session, family)
    if families:
        audit.record(
            session,
            action="auth.logout",
            actor=principal,
            organization_id=principal.organization_id if principal else None,
            target_type="session",
            target_id=",".join(sorted(map(str, families))),
        )
    await session.commit()


async def change_password(
    session: AsyncSession, principal: Principal, *, current: str, new: str
) -> None:
    """Change one's own password; every other session of the user ends."""
    user = await session.get(User, principal.user_id) if principal.user_id else None
    if user is None:
        raise Unauthorized("only users have passwords", code="NOT_A_USER")
    if not await verify_password(current, user.password_hash):
        audit.record(
            session,
            action="auth.change_password",
            actor=principal,
            outcome="failure",
            organization_id=user.organization_id,
            target_type="user",
            target_id=user.id,
        )
        await session.commit()
        raise Unauthorized("the current password is wrong", code="BAD_CREDENTIALS")
    user.password_hash = await hash_password(new)
    user.password_changed_at = utcnow()
    await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.user_id == user.id,
            RefreshToken.revoked_at.is_(None),
            RefreshToken.family_id != principal.session_id,
        )
        .values(revoked_at=utcnow())
    )
    audit.record(
        session,
        action="auth.change_password",
        actor=principal,
        organization_id=user.organization_id,
        target_type="user",
        target_id=user.id,
    )
    await session.commit()
