"""GET /api/v1/audit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from fleetcore.audit import service
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import LimitQuery

router = APIRouter(prefix="/api/v1", tags=["audit"])


class AuditEventOut(BaseModel):
    """One audit event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    ts: datetime
    organization_id: uuid.UUID | None
    actor_type: str
    actor_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    outcome: str
    request_id: str | None
    client_address: str | None
    details: dict[str, Any]


class AuditPage(BaseModel):
    """Newest first; pass next_before_id as before_id for older events."""

    items: list[AuditEventOut]
    next_before_id: int | None


@router.get("/audit", summary="The organization's audit log (admins)")
async def list_audit(
    session: SessionDep,
    principal: PrincipalDep,
    action: str | None = None,
    actor_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1)] = None,
    limit: LimitQuery = 100,
) -> AuditPage:
    """Filter by action, actor, target, outcome and time."""
    filters = service.AuditFilter(
        action=action,
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        since=since,
        until=until,
    )
    rows = await service.list_events(
        session, principal, filters=filters, before_id=before_id, limit=limit + 1
    )
    items = rows[:limit]
    return AuditPage(
        items=[AuditEventOut.model_validate(r) for r in items],
        next_before_id=items[-1].id if len(rows) > limit else None,
    )
