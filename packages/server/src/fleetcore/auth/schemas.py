"""Request and response bodies of identity endpoints."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from fleetcore.auth.principal import Role
from fleetcore.auth.security import MIN_PASSWORD_LENGTH

SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
Password = Field(min_length=MIN_PASSWORD_LENGTH, max_length=256)


class OrganizationIn(BaseModel):
    """POST /api/v1/organizations."""

    name: str = Field(min_length=1, max_length=200)
    slug: str = Field(min_length=1, max_length=64)

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("lower-case letters, digits and inner hyphens only")
        return value


class OrganizationOut(BaseModel):
    """An organization."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    slug: str
    created_at: datetime


class UserIn(BaseModel):
    """POST /api/v1/users."""

    email: EmailStr
    password: str = Password
    role: Role = Role.VIEWER
    organization_id: uuid.UUID | None = Field(None, description="superusers only")


class UserPatch(BaseModel):
    """PATCH /api/v1/users/{id}: change role or (de)activate."""

    role: Role | None = None
    is_active: bool | None = None


class UserOut(BaseModel):
    """A user (never the password hash)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: Role
    organization_id: uuid.UUID | None
    is_superuser: bool
    is_active: bool
    created_at: datetime
    last_login_at: datetime | None


class LoginIn(BaseModel):
    """POST /api/v1/auth/login."""

    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=256)


class TokenOut(BaseModel):
    """Tokens issued by login and refresh."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="seconds until the access token expires")


class RefreshIn(BaseModel):
    """POST /api/v1/auth/refresh."""

    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(BaseModel):
    """POST /api/v1/auth/logout: the refresh token whose session to end (optional)."""

    refresh_token: str | None = Field(None, max_length=512)


class ChangePasswordIn(BaseModel):
    """POST /api/v1/auth/change-password."""

    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Password


class MeOut(UserOut):
    """GET /api/v1/auth/me."""

    organization: OrganizationOut | None = None


class ApiKeyIn(BaseModel):
    """POST /api/v1/api-keys."""

    name: str = Field(min_length=1, max_length=200)
    role: Role = Role.VIEWER
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    """An API key as listed (never the key)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    """The answer to creating a key: the only time the key is shown."""

    key: str
