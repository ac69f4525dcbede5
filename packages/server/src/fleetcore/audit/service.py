"""Writing and reading the audit log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit.models import AuditEvent
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import as_utc
from fleetcore.request_context import current_client_address, current_request_id


def record(
    session: AsyncSession,
    *,
    action: str,
    actor: Principal | None,
    organization_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: object = None,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
    actor_type: str | None = None,
    actor_id: str | None = None,
) -> AuditEvent:
    """Add an audit event to the session; it commits with the change it describes."""
    event = AuditEvent(
        organization_id=organization_id,
        actor_type=actor_type or (actor.kind.value if actor else "anonymous"),
        actor_id=actor_id or (str(actor.subject_id) if actor else None),
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        outcome=outcome,
        request_id=current_request_id(),
        client_address=current_client_address(),
        details=details or {},
    )
    session.add(event)
    return event


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What GET /api/v1/audit may filter on."""

    action: str | None = None
    actor_id: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: AuditFilter,
    before_id: int | None,
    limit: int,
) -> list[AuditEvent]:
    """Newest first, for the caller's organization (admins only)."""
    principal.require(Role.ADMIN)
    query = select(AuditEvent).where(AuditEvent.organization_id == principal.org_id)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.actor_id:
        query = query.where(AuditEvent.actor_id == filters.actor_id)
    if filters.target_type:
        query = query.where(AuditEvent.target_type == filters.target_type)
    if filters.target_id:
        query = query.where(AuditEvent.target_id == filters.target_id)
    if filters.outcome:
        query = query.where(AuditEvent.outcome == filters.outcome)
    if filters.since:
        query = query.where(AuditEvent.ts >= as_utc(filters.since))
    if filters.until:
        query = query.where(AuditEvent.ts < as_utc(filters.until))
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    query = query.order_by(AuditEvent.id.desc()).limit(limit)
    return list((await session.scalars(query)).all())
