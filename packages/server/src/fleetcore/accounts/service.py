"""Sign-up, email verification and password reset, without account enumeration.

Every answer that takes an email is the same whether or not an account has it: the same
status and body, and about the same time (both paths hash the password with argon2, write
an audit event, commit and queue a mail; mails leave in the background, fleetcore.accounts.
mail). What differs is the mail, which only the address's owner reads: a verification link
for a new address, "someone tried to sign up with your address" for a taken one.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.accounts import links
from fleetcore.accounts.mail import AccountMail, Mailer
from fleetcore.accounts.models import AccountLink, Purpose
from fleetcore.audit import service as audit
from fleetcore.auth.models import Organization, RefreshToken, User
from fleetcore.auth.principal import Role
from fleetcore.auth.security import hash_password
from fleetcore.config import Settings
from fleetcore.db import utcnow
from fleetcore.errors import Conflict, DomainError, Forbidden

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class InvalidLink(DomainError):
    """The link is forged, unknown, used, revoked or expired (one answer for all): 422, as
    for any body that passes the schema but not the rules."""

    status_code = 422
    default_code = "INVALID_LINK"

    def __init__(self) -> None:
        super().__init__("this link is not valid any more (used, expired or revoked); ask again")


@dataclass(frozen=True, slots=True)
class Context:
    """What account requests need beyond the session: settings, the mailer, the link base."""

    settings: Settings
    mailer: Mailer
    base_url: str  # links in mails start with it (FLEETCORE_PUBLIC_URL in production)

    @property
    def secret(self) -> str:
        """The key links are signed with."""
        return self.settings.secret_key.get_secret_value()


def normalize(email: str) -> str:
    """Emails are stored and compared lower-cased."""
    return email.strip().lower()


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    """The user of an address, if any (emails are unique across the platform)."""
    return await session.scalar(select(User).where(func.lower(User.email) == email))


def new_link(
    ctx: Context, purpose: Purpose, *, email: str, ttl_s: int, **fields: object
) -> tuple[AccountLink, str]:
    """A link row (to add) and its token (for the mail only)."""
    token, digest = links.issue(ctx.secret, purpose)
    row = AccountLink(
        purpose=purpose.value,
        token_hash=digest,
        email=email,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
        **fields,
    )
    return row, token


async def take(session: AsyncSession, ctx: Context, purpose: Purpose, token: str) -> AccountLink:
    """Spend a link atomically (of two concurrent uses one wins); InvalidLink otherwise.

    Spent in the caller's transaction: if what follows fails, the rollback un-spends it.
    """
    digest = links.stored_hash(ctx.secret, purpose, token)
    if digest is None:
        raise InvalidLink
    now = utcnow()
    spent = await session.execute(
        update(AccountLink)
        .where(
            AccountLink.token_hash == digest,
            AccountLink.purpose == purpose.value,
            AccountLink.used_at.is_(None),
            AccountLink.revoked_at.is_(None),
            AccountLink.expires_at > now,
        )
        .values(used_at=now)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidLink
    row = await session.scalar(select(AccountLink).where(AccountLink.token_hash == digest))
    assert row is not None  # just updated in this transaction
    return row


# -- sign-up --------------------------------------------------------------------------------
async def register(
    session: AsyncSession, ctx: Context, *, organization_name: str, email: str, password: str
) -> None:
    """Start a sign-up: a verification link to a new address, a notice to a taken one."""
    if ctx.settings.signup != "open":
        raise Forbidden(
            "sign-up is closed: ask an administrator for an invitation", code="SIGNUP_CLOSED"
        )
    email = normalize(email)
    password_hash = await hash_password(password)  # on both paths: the same time either way
    existing = await user_by_email(session, email)
    if existing is not None:
        audit.record(
            session,
            action="account.signup",
            actor=None,
            outcome="failure",
            organization_id=None,
            details={"email": email, "reason": "email_taken"},
        )
        await session.commit()
        ctx.mailer.send(
            AccountMail(
                to=email,
                kind="signup_taken",
                subject="Someone tried to sign up with your address",
                body=(
                    "Someone (perhaps you) tried to create a Fleetcore organization with this "
                    "address, which already has an account. Nothing was changed.\n\n"
                    f"Sign in: {ctx.base_url}/auth/login\n"
                    f"Forgot your password? {ctx.base_url}/auth/forgot-password\n"
                ),
            )
        )
        return
    row, token = new_link(
        ctx,
        Purpose.SIGNUP,
        email=email,
        ttl_s=ctx.settings.signup_link_ttl_s,
        payload={"organization_name": organization_name, "password_hash": password_hash},
    )
    session.add(row)
    audit.record(
        session,
        action="account.signup",
        actor=None,
        organization_id=None,
        target_type="account_link",
        target_id=row.id,
        details={"email": email, "step": "requested"},
    )
    await session.commit()
    link = f"{ctx.base_url}/auth/verify?token={token}"
    ctx.mailer.send(
        AccountMail(
            to=email,
            kind="signup",
            subject="Verify your email to finish signing up",
            body=(
                f"Follow this link to verify your address and create {organization_name!r}:\n\n"
                f"{link}\n\nIt works once, for {ctx.settings.signup_link_ttl_s // 3600} hours. "
                "If you did not sign up, ignore this mail.\n"
            ),
            link=link,
        )
    )


def _slug(name: str) -> str:
    # Random suffix always: a slug derived from the name alone would answer "taken" for a
    # name another organization uses, which is what sign-up must not reveal.
    base = _NOT_SLUG.sub("-", name.lower()).strip("-")[:50].strip("-") or "org"
    return f"{base}-{secrets.token_hex(3)}"


async def verify(session: AsyncSession, ctx: Context, *, token: str) -> User:
    """Follow a sign-up link: the organization and its first admin are created now."""
    try:
        row = await take(session, ctx, Purpose.SIGNUP, token)
    except InvalidLink:
        await _audit_bad_link(session, "account.signup")
        raise
    name = str(row.payload.get("organization_name") or row.email)
    org = Organization(name=name, slug=_slug(name))
    session.add(org)
    await session.flush()
    user = User(
        organization_id=org.id,
        email=row.email,
        password_hash=str(row.payload["password_hash"]),
        role=Role.ADMIN.value,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        # Another sign-up of this address was verified first, or an admin created it: the
        # link's holder owns the mailbox, so saying so reveals nothing.
        await session.rollback()
        raise Conflict(
            "this address already has an account: sign in, or reset its password",
            code="EMAIL_HAS_ACCOUNT",
        ) from None
    row.payload = {"organization_name": name}  # the hash served its purpose
    for action, target_type, target in (
        ("organization.create", "organization", org.id),
        ("account.signup", "user", user.id),
    ):
        audit.record(
            session,
            action=action,
            actor=None,
            actor_type="user",
            actor_id=str(user.id),
            organization_id=org.id,
            target_type=target_type,
            target_id=target,
            details={"email": row.email, "step": "verified", "slug": org.slug},
        )
    await session.commit()
    return user


# -- password reset -------------------------------------------------------------------------
async def request_reset(session: AsyncSession, ctx: Context, *, email: str) -> None:
    """Mail a reset link if the address has an active account; the same answer if not."""
    email = normalize(email)
    user = await user_by_email(session, email)
    if user is None or not user.is_active:
        audit.record(
            session,
            action="account.password_reset",
            actor=None,
            outcome="failure",
            organization_id=user.organization_id if user else None,
            details={"email": email, "reason": "no_active_account", "step": "requested"},
        )
        await session.commit()
        return
    await _revoke_links(session, user_id=user.id, purpose=Purpose.RESET)  # the newest only
    row, token = new_link(
        ctx, Purpose.RESET, email=email, ttl_s=ctx.settings.password_reset_link_ttl_s
    )
    row.user_id = user.id
    session.add(row)
    audit.record(
        session,
        action="account.password_reset",
        actor=None,
        organization_id=user.organization_id,
        target_type="user",
        target_id=user.id,
        details={"step": "requested"},
    )
    await session.commit()
    link = f"{ctx.base_url}/auth/reset-password?token={token}"
    minutes = ctx.settings.password_reset_link_ttl_s // 60
    ctx.mailer.send(
        AccountMail(
            to=email,
            kind="reset",
            subject="Reset your password",
            body=(
                f"Follow this link to choose a new password:\n\n{link}\n\nIt works once, for "
                f"{minutes} minutes, and signs you out everywhere. If you did not ask, ignore "
                "this mail: your password stays as it is.\n"
            ),
            link=link,
        )
    )


async def reset_password(session: AsyncSession, ctx: Context, *, token: str, password: str) -> None:
    """Set a new password from a reset link; every session and refresh token of the user ends."""
    password_hash = await hash_password(password)  # before the check: same time either way
    try:
        row = await take(session, ctx, Purpose.RESET, token)
    except InvalidLink:
        await _audit_bad_link(session, "account.password_reset")
        raise
    user = await session.get(User, row.user_id) if row.user_id else None
    if user is None or not user.is_active:
        await session.rollback()
        raise InvalidLink
    now = utcnow()
    user.password_hash = password_hash
    user.password_changed_at = now
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await _revoke_links(session, user_id=user.id, purpose=Purpose.RESET)
    audit.record(
        session,
        action="account.password_reset",
        actor=None,
        actor_type="user",
        actor_id=str(user.id),
        organization_id=user.organization_id,
        target_type="user",
        target_id=user.id,
        details={"step": "completed", "sessions_ended": True},
    )
    await session.commit()


async def _revoke_links(session: AsyncSession, *, user_id: object, purpose: Purpose) -> None:
    await session.execute(
        update(AccountLink)
        .where(
            AccountLink.user_id == user_id,
            AccountLink.purpose == purpose.value,
            AccountLink.used_at.is_(None),
            AccountLink.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )


async def _audit_bad_link(session: AsyncSession, action: str) -> None:
    """A refused link is worth a record (someone guessing, or an old mail)."""
    await session.rollback()
    audit.record(
        session,
        action=action,
        actor=None,
        outcome="failure",
        organization_id=None,
        details={"reason": "invalid_link"},
    )
    await session.commit()
