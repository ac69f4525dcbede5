"""The commands part of the device page: recent commands, and whether this user may send one
(the form's limits come from the API's schema, so the page and the API agree)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal, Role
from fleetcore.commands import service
from fleetcore.commands.schemas import MAX_TIMEOUT_S
from fleetcore.devices.models import Device

RECENT_ROWS = 10


async def device_section(
    session: AsyncSession, principal: Principal, device: Device
) -> dict[str, object]:
    """Recent commands and the send form's settings, for devices/detail.html."""
    rows, _ = await service.list_commands(
        session, principal, device.id, status=None, cursor=None, limit=RECENT_ROWS
    )
    return {
        "commands": rows,
        "can_command": principal.has(Role.OPERATOR),
        "max_timeout_s": MAX_TIMEOUT_S,
    }
