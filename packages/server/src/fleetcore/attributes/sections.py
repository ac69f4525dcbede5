"""The attributes part of the device page: every scope, desired against reported."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.attributes import service
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """The device's attributes, for devices/detail.html."""
    return {"attributes": await service.get_attributes(session, principal, device.id)}
