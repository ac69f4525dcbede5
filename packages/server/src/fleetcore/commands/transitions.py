"""State changes of commands: one conditional UPDATE each, so concurrent changes cannot
both win, and the live message each change publishes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.commands.models import CommandStatus, DeviceCommand
from fleetcore.db import utcnow

# The column stamped when a command reaches each state.
STAMP = {
    CommandStatus.QUEUED: "created_at",
    CommandStatus.SENT: "sent_at",
    CommandStatus.DELIVERED: "delivered_at",
    CommandStatus.SUCCEEDED: "completed_at",
    CommandStatus.FAILED: "completed_at",
    CommandStatus.EXPIRED: "expired_at",
    CommandStatus.CANCELLED: "cancelled_at",
}


async def move(
    session: AsyncSession,
    *where: ColumnElement[bool],
    expected: tuple[CommandStatus, ...],
    to: CommandStatus,
    now: datetime | None = None,
    **values: Any,
) -> list[DeviceCommand]:
    """Move the matching commands still in an `expected` state to `to`; returns those moved.

    UPDATE ... WHERE status IN (expected) RETURNING: a command another transition took
    first is simply not returned. The caller commits.
    """
    stamp = {STAMP[to]: now or utcnow()}
    statement = (
        update(DeviceCommand)
        .where(*where, DeviceCommand.status.in_(expected))
        .values(status=to, **stamp, **values)
        .returning(DeviceCommand)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list((await session.scalars(statement)).all())


def reached_at(command: DeviceCommand) -> datetime:
    """When the command reached its current state."""
    value: datetime | None = getattr(command, STAMP[CommandStatus(command.status)])
    return value or command.created_at


def live_message(command: DeviceCommand) -> dict[str, Any]:
    """What the "commands" live channel says about a command's new state."""
    return {
        "type": "command",
        "id": str(command.id),
        "device_id": str(command.device_id),
        "method": command.method,
        "status": command.status,
        "result": command.result,
        "error": command.error,
        "at": reached_at(command).isoformat(),
    }
