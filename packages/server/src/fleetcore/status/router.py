"""GET /api/v1/devices/{id}/status-history: every online/offline transition, newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.status import service

router = APIRouter(prefix="/api/v1", tags=["devices"])


class StatusChangeOut(BaseModel):
    """One transition."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: uuid.UUID
    status: Literal["online", "offline"]
    reason: Literal["connect", "disconnect", "will", "traffic", "timeout"]
    at: datetime


@router.get("/devices/{device_id:uuid}/status-history", summary="A device's online/offline history")
async def status_history(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[StatusChangeOut]:
    """Newest first; reason says what caused each transition."""
    rows, next_cursor = await service.status_history(
        session, principal, device_id, cursor=cursor, limit=limit
    )
    return Page(items=[StatusChangeOut.model_validate(r) for r in rows], next_cursor=next_cursor)
