"""The health part of the device page: health and wear, anomalies for the charts, and the
advisory wording its template calls (advisory, not analytics: analytics imports no page code)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.advisory import wording
from fleetcore.analytics import queries
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """Health, wear and findings, for devices/detail.html."""
    found = await queries.device_analytics(session, principal, device.id)
    # The section shows for a profile that watches keys, or a device scored before.
    shown = found if found.configured or found.health is not None else None
    return {"analytics": shown, **wording.FOR_TEMPLATES}
