"""The status part of the device page: its recent online/offline transitions."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.status import service

HISTORY_ROWS = 20


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """The newest status transitions, for devices/detail.html."""
    history, _ = await service.status_history(
        session, principal, device.id, cursor=None, limit=HISTORY_ROWS
    )
    return {"history": history}
