"""Device commands for users: create (checked against the profile's allow-list), list,
read, cancel. Delivery, results and expiry are in fleetcore.commands.delivery."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.commands.delivery import (
    MAX_RESULT_BYTES,
    MAX_RPC_ID,
    CommandService,
    DeviceRef,
    Refusal,
)
from fleetcore.commands.limits import check_command
from fleetcore.commands.models import CANCELLABLE, CommandStatus, DeviceCommand
from fleetcore.commands.schemas import CommandIn
from fleetcore.commands.transitions import move
from fleetcore.db import utcnow
from fleetcore.devices import service as devices
from fleetcore.devices.models import DeviceProfile
from fleetcore.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from fleetcore.pagination import decode_cursor, page_of, paginate

OFFLINE = "device offline"
_INSERT_ATTEMPTS = 5


def _not_found() -> NotFound:
    return NotFound("command not found", code="COMMAND_NOT_FOUND")


def _audit(
    session: AsyncSession, principal: Principal, action: str, command: DeviceCommand
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=command.organization_id,
        target_type="command",
        target_id=command.id,
        details={
            "device_id": str(command.device_id),
            "method": command.method,
            "status": command.status,
        },
    )


async def _insert(session: AsyncSession, values: dict[str, object]) -> DeviceCommand:
    """Insert with the device's next ThingsBoard request id (retried if taken concurrently)."""
    device_id = values["device_id"]
    next_rpc_id = (
        select(func.coalesce(func.max(DeviceCommand.rpc_id), 0) + 1)
        .where(DeviceCommand.device_id == device_id)
        .scalar_subquery()
    )
    statement = insert(DeviceCommand).values(**values, rpc_id=next_rpc_id).returning(DeviceCommand)
    for attempt in range(_INSERT_ATTEMPTS):
        try:
            async with session.begin_nested():
                return (await session.scalars(statement)).one()
        except IntegrityError:
            if attempt == _INSERT_ATTEMPTS - 1:
                raise Conflict(
                    "the device's commands changed meanwhile; retry", code="COMMAND_CONFLICT"
                ) from None
    raise AssertionError("unreachable")  # pragma: no cover


async def create_command(
    session: AsyncSession,
    principal: Principal,
    commands: CommandService,
    device_id: uuid.UUID,
    *,
    data: CommandIn,
) -> DeviceCommand:
    """Queue a command (operators) and send it if the device is online.

    Refused (422) when the profile's allow-list does not let the method or its params; a
    non-persistent command to an offline device is stored as failed ("device offline").
    """
    principal.require(Role.OPERATOR)
    device = await devices.get_device(session, principal, device_id)
    profile = await session.get(DeviceProfile, device.profile_id) if device.profile_id else None
    limits = profile.command_limits if profile else None
    await session.commit()  # end the read: SQLite cannot upgrade it to a write under load
    # On a worker thread: the check is bounded (safe_schema.py) but may take a few hundred
    # milliseconds of CPU, which the event loop must not wait out.
    await asyncio.to_thread(check_command, limits, data.method, data.params)
    online = commands.is_online(device.id)
    now = utcnow()
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "organization_id": device.organization_id,
        "device_id": device.id,
        "method": data.method,
        "params": data.params,
        "persistent": data.persistent,
        "timeout_s": data.timeout_s,
        "status": CommandStatus.QUEUED,
        "created_at": now,
        "expires_at": now + timedelta(seconds=data.timeout_s),
    }
    if not online and not data.persistent:
        values.update(status=CommandStatus.FAILED, error=OFFLINE, completed_at=now)
    command = await _insert(session, values)
    _audit(session, principal, "command.create", command)
    await session.commit()
    if command.status == CommandStatus.QUEUED:
        commands.note_deadline(command.expires_at)
    commands.publish([command])
    if command.status == CommandStatus.QUEUED and online:
        await commands.deliver_queued(device.id)
        await session.refresh(command)
        await session.commit()
    return command


async def get_command(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, command_id: uuid.UUID
) -> DeviceCommand:
    """One command of a live device of the caller's organization."""
    device = await devices.get_device(session, principal, device_id)
    command = await session.scalar(
        select(DeviceCommand).where(
            DeviceCommand.id == command_id,
            DeviceCommand.device_id == device.id,
            DeviceCommand.organization_id == principal.org_id,
        )
    )
    if command is None:
        raise _not_found()
    return command


def _check_cursor(cursor: str) -> None:
    # A forged cursor would compare unlike types in SQL.
    created_at, command_id = decode_cursor(cursor)
    if not (isinstance(created_at, datetime) and created_at.tzinfo is not None) or not isinstance(
        command_id, uuid.UUID
    ):
        raise Invalid("the cursor does not fit this list", code="INVALID_CURSOR")


async def list_commands(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    status: CommandStatus | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[DeviceCommand], str | None]:
    """A device's commands, newest first, and the next cursor."""
    device = await devices.get_device(session, principal, device_id)
    query = select(DeviceCommand).where(
        DeviceCommand.device_id == device.id, DeviceCommand.organization_id == principal.org_id
    )
    if status is not None:
        query = query.where(DeviceCommand.status == status)
    if cursor is not None:
        _check_cursor(cursor)
    query = paginate(
        query,
        sort=DeviceCommand.created_at,
        id_column=DeviceCommand.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def cancel_command(
    session: AsyncSession,
    principal: Principal,
    commands: CommandService,
    device_id: uuid.UUID,
    command_id: uuid.UUID,
) -> DeviceCommand:
    """Cancel a queued or sent command (operators); 409 once delivered or finished."""
    principal.require(Role.OPERATOR)
    device = await devices.get_device(session, principal, device_id)
    await session.commit()
    moved = await move(
        session,
        DeviceCommand.id == command_id,
        DeviceCommand.device_id == device.id,
        expected=CANCELLABLE,
        to=CommandStatus.CANCELLED,
    )
    if not moved:
        status = await session.scalar(
            select(DeviceCommand.status).where(
                DeviceCommand.id == command_id, DeviceCommand.device_id == device.id
            )
        )
        if status is None:
            raise _not_found()
        raise Conflict(
            f"a {status} command cannot be cancelled (only queued or sent ones)",
            code="COMMAND_NOT_CANCELLABLE",
            details={"status": status},
        )
    command = moved[0]
    _audit(session, principal, "command.cancel", command)
    await session.commit()
    commands.publish([command])
    return command


# -- the device's side over HTTP ---------------------------------------------------------


async def poll(
    session: AsyncSession,
    commands: CommandService,
    device: DeviceRef,
    *,
    timeout_s: float,
    limit: int,
    channel: str,
) -> list[DeviceCommand]:
    """Queued commands for the device, now delivered; waits up to timeout_s for one."""
    await session.close()  # the request's connection is not held while the poll waits
    return await commands.poll(device, timeout_s=timeout_s, limit=limit, channel=channel)


async def device_result(
    commands: CommandService,
    device: DeviceRef,
    *,
    command_id: uuid.UUID | None = None,
    rpc_id: int | None = None,
    succeeded: bool,
    result: Any = None,
    error: str | None = None,
) -> DeviceCommand:
    """A device answers one of its sent or delivered commands; 404 unknown, 409 not open."""
    if rpc_id is not None and rpc_id > MAX_RPC_ID:
        raise _not_found()
    outcome = await commands.record_result(
        device,
        command_id=command_id,
        rpc_id=rpc_id,
        succeeded=succeeded,
        result=result,
        error=error,
    )
    if outcome in (Refusal.UNKNOWN, Refusal.NOT_YOURS):
        raise _not_found()  # another device's command: as if it did not exist
    if outcome is Refusal.TOO_LARGE:
        raise PayloadTooLarge(
            f"the result is larger than {MAX_RESULT_BYTES} bytes as JSON",
            code="RESULT_TOO_LARGE",
            details={"max_bytes": MAX_RESULT_BYTES},
        )
    if outcome is Refusal.UNSTORABLE:
        raise Invalid(
            "the result cannot be stored: JSON nested deeper than 32 levels, an integer "
            "past 64 bits, or text that is not valid Unicode",
            code="RESULT_NOT_STORABLE",
        )
    if outcome is Refusal.NOT_OPEN:
        raise Conflict(
            "the command is not waiting for a result (never sent, or already finished)",
            code="COMMAND_NOT_OPEN",
        )
    assert isinstance(outcome, DeviceCommand)
    return outcome
