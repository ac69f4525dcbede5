"""Recommendations API: list, read, approve, reject, mark an inspection done."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.advisory import recommendations as service
from fleetcore.advisory.schemas import (
    NoteIn,
    RecommendationOut,
    RecommendationStatusName,
    RejectIn,
)
from fleetcore.analytics.models import Recommendation
from fleetcore.auth.deps import PrincipalDep
from fleetcore.commands.deps import CommandsDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1", tags=["recommendations"])


async def _out(session: AsyncSession, rows: Sequence[Recommendation]) -> list[RecommendationOut]:
    extra = await service.describe(session, rows)
    return [
        RecommendationOut.model_validate(
            {**RecommendationOut.model_validate(row).model_dump(), **extra[row.id]}
        )
        for row in rows
    ]


async def _one(session: AsyncSession, row: Recommendation) -> RecommendationOut:
    return (await _out(session, [row]))[0]


@router.get("/recommendations", summary="List recommendations")
async def list_recommendations(
    session: SessionDep,
    principal: PrincipalDep,
    status: RecommendationStatusName | None = None,
    device_id: uuid.UUID | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[RecommendationOut]:
    """Newest first."""
    rows, next_cursor = await service.list_recommendations(
        session, principal, status=status, device_id=device_id, cursor=cursor, limit=limit
    )
    return Page(items=await _out(session, rows), next_cursor=next_cursor)


@router.get("/recommendations/{recommendation_id:uuid}", summary="A recommendation")
async def get_recommendation(
    recommendation_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> RecommendationOut:
    """Its evidence, approvals, the safety validator's last refusal, and its command."""
    row = await service.get_recommendation(session, principal, recommendation_id)
    return await _one(session, row)


@router.post("/recommendations/{recommendation_id:uuid}/approve", summary="Approve")
async def approve(
    recommendation_id: uuid.UUID,
    data: NoteIn,
    session: SessionDep,
    principal: PrincipalDep,
    commands: CommandsDep,
) -> RecommendationOut:
    """Operators and above. An inspection is approved; an action becomes a command if the
    safety validator passes (a critical method needs two people: the first approval is
    stored and the recommendation stays proposed); 422 SAFETY_REFUSED with the reasons
    otherwise, and nothing changes."""
    row = await service.approve(session, principal, commands, recommendation_id, note=data.note)
    return await _one(session, row)


@router.post("/recommendations/{recommendation_id:uuid}/reject", summary="Reject")
async def reject(
    recommendation_id: uuid.UUID, data: RejectIn, session: SessionDep, principal: PrincipalDep
) -> RecommendationOut:
    """Operators and above, with the reason."""
    row = await service.reject(session, principal, recommendation_id, reason=data.reason)
    return await _one(session, row)


@router.post("/recommendations/{recommendation_id:uuid}/done", summary="Mark an inspection done")
async def mark_done(
    recommendation_id: uuid.UUID, data: NoteIn, session: SessionDep, principal: PrincipalDep
) -> RecommendationOut:
    """Operators and above: an approved inspection was carried out (-> executed)."""
    row = await service.mark_done(session, principal, recommendation_id, note=data.note)
    return await _one(session, row)
