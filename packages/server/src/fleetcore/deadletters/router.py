"""GET /api/v1/dead-letters: device payloads the platform could not use."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deadletters import service
from fleetcore.deadletters.models import MAX_REASON
from fleetcore.deadletters.schemas import DeadLetterOut, TransportName
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1", tags=["dead letters"])


@router.get("/dead-letters", summary="Payloads devices sent that could not be used")
async def list_dead_letters(
    session: SessionDep,
    principal: PrincipalDep,
    device_id: uuid.UUID | None = None,
    reason: Annotated[str | None, Query(max_length=MAX_REASON)] = None,
    transport: TransportName | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[DeadLetterOut]:
    """Newest first; a time without offset is UTC."""
    filters = service.DeadLetterFilter(
        device_id=device_id, reason=reason, transport=transport, since=since, until=until
    )
    rows, next_cursor = await service.list_dead_letters(
        session, principal, filters=filters, cursor=cursor, limit=limit
    )
    return Page(items=[DeadLetterOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/dead-letters/{dead_letter_id}", summary="One dead letter")
async def get_dead_letter(
    dead_letter_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    principal: PrincipalDep,
) -> DeadLetterOut:
    """404 DEAD_LETTER_NOT_FOUND for another organization's."""
    return DeadLetterOut.model_validate(
        await service.get_dead_letter(session, principal, dead_letter_id)
    )
