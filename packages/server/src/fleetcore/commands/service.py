"""Device commands for users: create (checked against the profile's allow-list and its
safety policy, safety_gate.py), list, read, cancel. Delivery, results and expiry are in
fleetcore.commands.delivery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.commands import safety_gate
from fleetcore.commands.delivery import (
    MAX_RESULT_BYTES,
    MAX_RPC_ID,
    CommandService,
    DeviceRef,
    Refusal,
)
from fleetcore.commands.limits import check_command
from fleetcore.commands.models import CANCELLABLE, CommandStatus, DeviceCommand
from fleetcore.commands.safety_gate import SafetyRefused
from fleetcore.commands.schemas import CommandIn
from fleetcore.commands.transitions import move
from fleetcore.db import utcnow
from fleetcore.devices import service as devices
from fleetcore.devices.models import DeviceProfile
from fleetcore.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from fleetcore.pagination import page_of, paginate
from fleetcore.safety.inputs import Approval, SafetyRequest
from fleetcore.safety.policy import SafetyPolicy
from fleetcore.safety.validator import validate
from fleetcore.safety.verdict import Verdict

OFFLINE = "device offline"
_INSERT_ATTEMPTS = 5

# Runs in a new command's transaction, before its commit (the approval flow's transition).
OnCreated = Callable[[AsyncSession, DeviceCommand], Awaitable[None]]


def _not_found() -> NotFound:
    return NotFound("command not found", code="COMMAND_NOT_FOUND")


def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    command: DeviceCommand,
    extra: dict[str, Any] | None = None,
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=command.organization_id,
        target_type="command",
        target_id=command.id,
        details={
            **(extra or {}),
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
    approvals: Sequence[Approval] | None = None,
    requested_by: str | None = None,
    audit_details: dict[str, Any] | None = None,
    on_created: OnCreated | None = None,
) -> DeviceCommand:
    """Queue a command (operators) and send it if the device is online.

    Refused (422) when the profile's allow-list does not let the method or its params, and
    (SAFETY_REFUSED) when the profile has a safety policy the command does not pass: a direct
    call is requested and approved by its caller alone, so a critical method never passes it.
    `on_created` runs in the command's transaction before its commit (raising rolls the
    command back). A non-persistent command to an offline device is stored as failed.
    """
    principal.require(Role.OPERATOR)
    device = await devices.get_device(session, principal, device_id)
    profile = await session.get(DeviceProfile, device.profile_id) if device.profile_id else None
    limits = profile.command_limits if profile else None
    await session.commit()  # end the read: SQLite cannot upgrade it to a write under load
    # On a worker thread: the check is bounded (safe_schema.py) but may take a few hundred
    # milliseconds of CPU, which the event loop must not wait out.
    await asyncio.to_thread(check_command, limits, data.method, data.params)
    if requested_by is None:
        requested_by = str(principal.subject_id)
    if approvals is None:
        approvals = [Approval(by=requested_by, role=_role(principal))]
    details = dict(audit_details or {})
    # Every command to the device passes here one at a time (safety_gate.guard): the context
    # is read, judged and the command inserted and committed before the next one is judged,
    # so two concurrent commands cannot both pass an hourly limit measured without the other.
    async with safety_gate.guard(session, device.id) as profile_id:
        now = utcnow()
        policy = await _policy(session, profile_id)
        if policy is not None:
            context = await safety_gate.context_for(session, device.id, policy, now)
            request = SafetyRequest(data.method, data.params, requested_by, tuple(approvals))
            verdict = validate(policy, request, context)
            if not verdict.passed:
                target = (device.organization_id, device.id)  # the rollback expires `device`
                await session.rollback()  # nothing of the attempt stays; the guard is let go
                if not verdict.awaiting_approval:
                    await _audit_refusal(session, principal, target, data, verdict, details)
                raise SafetyRefused(verdict)
        online = commands.is_online(device.id)
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
        if on_created is not None:
            try:
                await on_created(session, command)
            except BaseException:
                await session.rollback()  # the command goes with the caller's step
                raise
        _audit(session, principal, "command.create", command, details)
        await session.commit()
    if command.status == CommandStatus.QUEUED:
        commands.note_deadline(command.expires_at)
    commands.publish([command])
    if command.status == CommandStatus.QUEUED and online:
        await commands.deliver_queued(device.id)
        await session.refresh(command)
        await session.commit()
    return command


def _role(principal: Principal) -> str:
    """The role an approval by the caller carries (a superuser approves as an admin)."""
    return Role.ADMIN.value if principal.is_superuser else principal.role.value


async def _policy(session: AsyncSession, profile_id: uuid.UUID | None) -> SafetyPolicy | None:
    """The profile's safety policy; None without one. A stored policy that no longer
    validates is returned as the empty policy, which refuses every method."""
    if profile_id is None:
        return None
    stored = await session.scalar(
        select(DeviceProfile.safety_policy).where(DeviceProfile.id == profile_id)
    )
    if stored is None:
        return None
    try:
        return SafetyPolicy.model_validate(stored)
    except ValidationError:
        return SafetyPolicy()


async def _audit_refusal(
    session: AsyncSession,
    principal: Principal,
    target: tuple[uuid.UUID, uuid.UUID],
    data: CommandIn,
    verdict: Verdict,
    details: dict[str, Any],
) -> None:
    """Record the refusal in a transaction of its own (the command's was rolled back)."""
    organization_id, device_id = target
    audit.record(
        session,
        action="command.safety_refused",
        actor=principal,
        organization_id=organization_id,
        target_type="device",
        target_id=device_id,
        outcome="denied",
        details={
            **details,
            "device_id": str(device_id),
            "method": data.method,
            "reasons": verdict.codes,
        },
    )
    await session.commit()


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
