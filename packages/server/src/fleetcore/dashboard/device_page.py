"""What the device page (/devices/{id}) shows beyond the device itself, gathered from the
domains that have a part in it.

Each domain offers its part as one function, `device_section(session, principal, device)` in
its sections.py, returning the values its part of devices/detail.html reads. This module is the
one list of them, so the page's route imports one module instead of six domains' services, and
a new part is one function and one line here. The sections run one after another: they share
the request's session, which runs one query at a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.advisory import sections as health
from fleetcore.alerts import sections as alerts
from fleetcore.attributes import sections as attributes
from fleetcore.auth.principal import Principal
from fleetcore.commands import sections as commands
from fleetcore.devices.models import Device
from fleetcore.events import sections as events
from fleetcore.ota import sections as ota
from fleetcore.status import sections as status
from fleetcore.telemetry import sections as telemetry

DeviceSection = Callable[[AsyncSession, Principal, Device], Awaitable[dict[str, object]]]

SECTIONS: tuple[DeviceSection, ...] = (
    telemetry.device_section,
    status.device_section,
    commands.device_section,
    events.device_section,
    health.device_section,
    attributes.device_section,
    alerts.device_section,
    ota.device_section,
)


async def device_sections(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, Any]:
    """Every section's values for the device page, in one mapping for the template."""
    values: dict[str, Any] = {}
    for section in SECTIONS:
        part = await section(session, principal, device)
        # Two sections giving one name would hide one of them without a word.
        clash = values.keys() & part.keys()
        if clash:
            raise RuntimeError(f"device page sections both set {sorted(clash)}")
        values.update(part)
    return values
