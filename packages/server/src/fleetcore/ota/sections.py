"""The OTA part of the device page: its firmware and software, and its update history."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.ota import history


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """Versions reported and assigned, update states, and the device's rollouts, newest
    first, for devices/detail.html."""
    return {
        "ota_versions": await history.device_versions(session, device),
        "ota_history": await history.device_history(session, principal, device.id),
    }
