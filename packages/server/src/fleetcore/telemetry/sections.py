"""The telemetry part of the device page: the newest value of every key, and which keys
are numbers (those get a chart)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.telemetry import queries


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """Latest values and the numeric keys among them, for devices/detail.html."""
    latest = await queries.latest_of_device(session, principal, device_id=device.id)
    numeric = sorted(
        k
        for k, v in latest.values.items()
        if isinstance(v.value, int | float) and not isinstance(v.value, bool)
    )
    return {"latest": latest.values, "numeric_keys": numeric}
