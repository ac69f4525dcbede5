"""The alerts part of the device page: its active and acknowledged alerts."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """Open alerts, for devices/detail.html."""
    return {"open_alerts": await service.open_alerts_of_device(session, principal, device.id)}
