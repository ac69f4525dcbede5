"""Organizations with a user of every role, signed in.

Signed in through the real API (POST /auth/login) unless the caller passes the app's
settings: then the sessions are issued as the login route issues them (a refresh token row,
a signed access token), without five HTTP round trips and password checks per organization.
The fixtures of tests/conftest.py do, since about 2,000 tests make an organization and
sign-in itself has its own tests (test_auth*, test_api_rate_limits).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth import sessions, users
from fleetcore.auth.models import User
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import OrganizationIn, UserIn
from fleetcore.config import Settings
from fleetcore.db import Database

PASSWORD = "correct horse battery staple"


@dataclass
class Tenant:
    """An organization, its users by role, and their bearer tokens."""

    org_id: uuid.UUID
    slug: str
    user_ids: dict[Role, uuid.UUID] = field(default_factory=dict)
    emails: dict[Role, str] = field(default_factory=dict)
    tokens: dict[Role, str] = field(default_factory=dict)

    def headers(self, role: Role = Role.ADMIN) -> dict[str, str]:
        """Authorization header of the user with `role`."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, str]:
    """POST /api/v1/auth/login; returns the token body."""
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def _issue(session: AsyncSession, settings: Settings, user: User) -> str:
    """An access token of a new session of `user`, as the login route would issue it."""
    ttl = timedelta(seconds=settings.access_token_ttl_s)
    return (await sessions.issue_session(session, settings, user, access_ttl=ttl)).access_token


async def make_tenant(
    client: httpx.AsyncClient,
    db: Database,
    slug: str | None = None,
    *,
    settings: Settings | None = None,
) -> Tenant:
    """A fresh organization with a user of every role, all signed in (through the API
    unless the app's `settings` are given)."""
    slug = slug or f"org-{uuid.uuid4().hex[:8]}"
    async with db.session(write=True) as session:  # SQLite: queue, do not fail, behind writers
        org = await users.create_organization(
            session, None, data=OrganizationIn(name=slug, slug=slug)
        )
        tenant = Tenant(org_id=org.id, slug=slug)
        for role in Role:
            email = f"{role.value}@{slug}.example.com"
            user = await users.create_user(
                session,
                None,
                data=UserIn(email=email, password=PASSWORD, role=role, organization_id=org.id),
            )
            tenant.user_ids[role] = user.id
            tenant.emails[role] = email
            if settings is not None:
                tenant.tokens[role] = await _issue(session, settings, user)
        await session.commit()
    for role in Role if settings is None else ():
        tenant.tokens[role] = (await login(client, tenant.emails[role]))["access_token"]
    return tenant


async def make_superuser(
    client: httpx.AsyncClient, db: Database, *, settings: Settings | None = None
) -> dict[str, str]:
    """A platform superuser without an organization; returns its auth headers."""
    email = f"root-{uuid.uuid4().hex[:8]}@platform.example.com"
    async with db.session(write=True) as session:  # SQLite: queue, do not fail, behind writers
        user = await users.create_user(
            session,
            None,
            data=UserIn(email=email, password=PASSWORD, role=Role.ADMIN),
            is_superuser=True,
        )
        token = await _issue(session, settings, user) if settings is not None else None
        await session.commit()
    if token is None:
        token = (await login(client, email))["access_token"]
    return {"Authorization": f"Bearer {token}"}


# -- vending service (routes and drivers) ---------------------------------------------------
async def driver_headers(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> tuple[uuid.UUID, dict[str, str]]:
    """Another route driver of the tenant, signed in: (user id, auth headers)."""
    email = f"driver-{uuid.uuid4().hex[:8]}@{tenant.slug}.example.com"
    async with db.session(write=True) as session:  # SQLite: queue, do not fail, behind writers
        user = await users.create_user(
            session,
            None,
            data=UserIn(
                email=email, password=PASSWORD, role=Role.DRIVER, organization_id=tenant.org_id
            ),
        )
    token = (await login(client, email))["access_token"]
    return user.id, {"Authorization": f"Bearer {token}"}
