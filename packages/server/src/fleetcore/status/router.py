"""GET /api/v1/devices/{id}/status-history: every online/offline transition, newest first."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.devices import service as devices
from fleetcore.errors import Invalid
from fleetcore.pagination import CursorQuery, LimitQuery, Page, decode_cursor, page_of, paginate
from fleetcore.status.models import DeviceStatusChange

router = APIRouter(prefix="/api/v1", tags=["devices"])


class StatusChangeOut(BaseModel):
    """One transition."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: uuid.UUID
    status: Literal["online", "offline"]
    reason: Literal["connect", "disconnect", "will", "traffic", "timeout"]
    at: datetime


@router.get("/devices/{device_id}/status-history", summary="A device's online/offline history")
async def status_history(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[StatusChangeOut]:
    """Newest first; reason says what caused each transition."""
    device = await devices.get_device(session, principal, device_id)
    if cursor is not None:
        _, row_id = decode_cursor(cursor)
        if type(row_id) is not int:
            raise Invalid("the cursor does not fit this list", code="INVALID_CURSOR")
    query = paginate(
        select(DeviceStatusChange).where(DeviceStatusChange.device_id == device.id),
        sort=DeviceStatusChange.id,
        id_column=DeviceStatusChange.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows, next_cursor = page_of((await session.scalars(query)).all(), limit=limit, sort_attr="id")
    return Page(items=[StatusChangeOut.model_validate(r) for r in rows], next_cursor=next_cursor)
