"""The events part of the device page: its newest events."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.events import service

RECENT_ROWS = 10


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """The newest events, for devices/detail.html."""
    rows, _ = await service.list_events(
        session, principal, device.id, filters=service.EventFilter(), cursor=None, limit=RECENT_ROWS
    )
    return {"events": rows}
