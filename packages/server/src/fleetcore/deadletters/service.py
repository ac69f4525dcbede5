"""Reading an organization's dead letters (writing is the sink's job)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.db import as_utc
from fleetcore.deadletters.models import DeadLetter
from fleetcore.errors import NotFound
from fleetcore.pagination import page_of, paginate


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """What GET /api/v1/dead-letters may filter on."""

    device_id: uuid.UUID | None = None
    reason: str | None = None
    transport: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_dead_letters(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: DeadLetterFilter,
    cursor: str | None,
    limit: int,
) -> tuple[list[DeadLetter], str | None]:
    """The organization's dead letters, newest first, and the next cursor (any role)."""
    query = select(DeadLetter).where(DeadLetter.organization_id == principal.org_id)
    if filters.device_id is not None:
        query = query.where(DeadLetter.device_id == filters.device_id)
    if filters.reason is not None:
        query = query.where(DeadLetter.reason == filters.reason)
    if filters.transport is not None:
        query = query.where(DeadLetter.transport == filters.transport)
    if filters.since is not None:
        query = query.where(DeadLetter.received_at >= as_utc(filters.since))
    if filters.until is not None:
        query = query.where(DeadLetter.received_at < as_utc(filters.until))
    query = paginate(
        query,
        sort=DeadLetter.received_at,
        id_column=DeadLetter.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="received_at")


async def get_dead_letter(
    session: AsyncSession, principal: Principal, dead_letter_id: int
) -> DeadLetter:
    """One dead letter of the caller's organization (404 for any other)."""
    found = await session.scalar(
        select(DeadLetter).where(
            DeadLetter.id == dead_letter_id, DeadLetter.organization_id == principal.org_id
        )
    )
    if found is None:
        raise NotFound("dead letter not found", code="DEAD_LETTER_NOT_FOUND")
    return found
