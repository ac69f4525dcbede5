"""Request and response bodies of the account endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, EmailStr, Field

from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import Password

# Short: the answer is deliberately the same whether or not the address has an account.
CHECK_YOUR_EMAIL = "check your email: if this request can go ahead, a link is on its way"
Token = Field(min_length=10, max_length=200)


class Accepted(BaseModel):
    """The neutral answer of requests that send a mail."""

    detail: str = CHECK_YOUR_EMAIL


class RegisterIn(BaseModel):
    """POST /api/v1/auth/register."""

    organization_name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    email: EmailStr
    password: str = Password


class VerifyIn(BaseModel):
    """POST /api/v1/auth/verify: the token of the sign-up link."""

    token: str = Token


class VerifiedOut(BaseModel):
    """The account a sign-up link created; sign in next."""

    user_id: uuid.UUID
    organization_id: uuid.UUID
    email: str


class ResetRequestIn(BaseModel):
    """POST /api/v1/auth/password-reset."""

    email: EmailStr


class ResetIn(BaseModel):
    """POST /api/v1/auth/password-reset/confirm."""

    token: str = Token
    password: str = Password


class InvitationIn(BaseModel):
    """POST /api/v1/invitations."""

    email: EmailStr
    role: Role = Role.VIEWER


class InvitationOut(BaseModel):
    """An invitation as its organization's admins see it (never its link)."""

    id: uuid.UUID
    email: str
    role: Role
    status: str = Field(description="pending, accepted, revoked or expired")
    created_at: datetime
    expires_at: datetime


class AcceptIn(BaseModel):
    """POST /api/v1/invitations/accept: the invitation link's token and a password."""

    token: str = Token
    password: str = Password
