"""Organization API keys: shown once, stored hashed, revocable, optionally expiring."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import ApiKey
from fleetcore.auth.principal import Principal, Role
from fleetcore.auth.schemas import ApiKeyIn
from fleetcore.auth.security import new_token, token_hash
from fleetcore.db import utcnow
from fleetcore.errors import Invalid, NotFound

KEY_PREFIX = "fck_"


async def create_api_key(
    session: AsyncSession, principal: Principal, *, data: ApiKeyIn
) -> tuple[ApiKey, str]:
    """A new key for the caller's organization; returns the row and the key (once)."""
    principal.require(Role.ADMIN)
    if data.expires_at is not None and data.expires_at <= utcnow():
        raise Invalid("expires_at must be in the future", details={"field": "expires_at"})
    if data.role is Role.DRIVER:  # a driver is a person assigned to routes, not an integration
        raise Invalid("an API key cannot have the driver role", details={"field": "role"})
    raw = new_token(KEY_PREFIX)
    key = ApiKey(
        organization_id=principal.org_id,
        name=data.name,
        role=data.role.value,
        prefix=raw[: len(KEY_PREFIX) + 6],
        key_hash=token_hash(raw),
        created_by=principal.user_id,
        expires_at=data.expires_at,
    )
    session.add(key)
    await session.flush()
    audit.record(
        session,
        action="api_key.create",
        actor=principal,
        organization_id=key.organization_id,
        target_type="api_key",
        target_id=key.id,
        details={"name": key.name, "role": key.role},
    )
    await session.commit()
    return key, raw


async def list_api_keys(session: AsyncSession, principal: Principal) -> list[ApiKey]:
    """The organization's keys, newest first (admins)."""
    principal.require(Role.ADMIN)
    query = (
        select(ApiKey)
        .where(ApiKey.organization_id == principal.org_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )
    return list((await session.scalars(query)).all())


async def revoke_api_key(session: AsyncSession, principal: Principal, key_id: uuid.UUID) -> ApiKey:
    """Stop a key working now (idempotent)."""
    principal.require(Role.ADMIN)
    key = await session.get(ApiKey, key_id)
    if key is None or key.organization_id != principal.org_id:
        raise NotFound("API key not found", code="API_KEY_NOT_FOUND")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            session,
            action="api_key.revoke",
            actor=principal,
            organization_id=key.organization_id,
            target_type="api_key",
            target_id=key.id,
        )
        await session.commit()
    return key
