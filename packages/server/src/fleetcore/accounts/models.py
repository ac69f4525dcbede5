"""The one table of account links: pending sign-ups, password resets and invitations.

A link's token is never stored, only its SHA-256 (the token has 256 bits of entropy, so the
hash cannot be reversed by guessing). A row is spent once (used_at), ends at expires_at and
can be revoked (revoked_at); the three purposes share those rules, so they share a table.

A sign-up is a pending row, not a user: the organization and its admin are created only
when the link is followed, so an unverified address never holds an account, a slug or a
place in the users' unique email index (nobody can squat another person's address).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class Purpose(StrEnum):
    """What a link does when followed."""

    SIGNUP = "signup"  # creates the organization and its admin (payload: name, password hash)
    RESET = "reset"  # sets a new password of user_id
    INVITE = "invite"  # creates a user of organization_id with role


class AccountLink(Base):
    """A single-use, expiring, revocable link sent by email."""

    __tablename__ = "account_links"
    __table_args__ = (
        Index("ix_account_links_organization_id_purpose", "organization_id", "purpose"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    purpose: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)  # lower-cased
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str | None] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
