"""Reading a device's online/offline history."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices import service as devices
from fleetcore.pagination import page_of, paginate
from fleetcore.status.models import DeviceStatusChange


async def status_history(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[DeviceStatusChange], str | None]:
    """A live device's transitions, newest first, and the next cursor."""
    device = await devices.get_device(session, principal, device_id)
    query = paginate(
        select(DeviceStatusChange).where(DeviceStatusChange.device_id == device.id),
        sort=DeviceStatusChange.id,
        id_column=DeviceStatusChange.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    return page_of((await session.scalars(query)).all(), limit=limit, sort_attr="id")
