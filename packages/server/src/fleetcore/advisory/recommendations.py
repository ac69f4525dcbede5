"""Recommendations for people: list, read, approve, reject, mark an inspection done; and the
jobs that expire undecided ones and follow approved ones' commands.

Approving one with a command calls the commands service's create_command, whose safety gate
judges the request with every approval so far (the requester is "analytics", never a
person): only missing approvals keeps it proposed with the new approval stored, a pass
creates the command, any other refusal changes nothing but the reasons shown. Every change
of a recommendation is one conditional UPDATE (`_move`): WHERE status IN (expected) AND
updated_at = the version read, so of two people deciding at once exactly one wins; the
other re-reads and tries again (or learns it was decided). When approval creates a command,
that UPDATE runs in the command's transaction: the loser's command is rolled back with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.analytics.models import Recommendation, RecommendationStatus
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.commands import service as commands_service
from fleetcore.commands.delivery import CommandService
from fleetcore.commands.models import CommandStatus, DeviceCommand
from fleetcore.commands.safety_gate import SafetyRefused
from fleetcore.commands.schemas import CommandIn
from fleetcore.db import Database, utcnow
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.devices.service import live_devices
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.safety.approvals import needed
from fleetcore.safety.inputs import Approval
from fleetcore.safety.policy import SafetyPolicy

S = RecommendationStatus
REQUESTER = "analytics"  # who asks for a recommendation's command: never a person
# The command an approval creates waits this long for an offline device, then expires.
COMMAND_TIMEOUT_S = 300
_ATTEMPTS = 5  # re-reads when another decision landed between our read and our UPDATE
BATCH = 500  # rows a job moves per run
ENDED = {
    CommandStatus.SUCCEEDED: S.EXECUTED,
    CommandStatus.FAILED: S.FAILED,
    CommandStatus.EXPIRED: S.FAILED,
    CommandStatus.CANCELLED: S.FAILED,
}


class _Changed(Exception):
    """The recommendation changed since it was read: read it again."""


def _not_found() -> NotFound:
    return NotFound("recommendation not found", code="RECOMMENDATION_NOT_FOUND")


async def get_recommendation(
    session: AsyncSession, principal: Principal, recommendation_id: uuid.UUID
) -> Recommendation:
    """One recommendation of the caller's organization (read afresh)."""
    found = await session.scalar(
        select(Recommendation)
        .where(
            Recommendation.id == recommendation_id,
            Recommendation.organization_id == principal.org_id,
        )
        .execution_options(populate_existing=True)
    )
    if found is None:
        raise _not_found()
    return found


async def list_recommendations(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    device_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Recommendation], str | None]:
    """The organization's recommendations, newest first, filtered."""
    query = select(Recommendation).where(Recommendation.organization_id == principal.org_id)
    if status is not None:
        query = query.where(Recommendation.status == status)
    if device_id is not None:
        query = query.where(Recommendation.device_id == device_id)
    query = paginate(
        query,
        sort=Recommendation.created_at,
        id_column=Recommendation.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def describe(
    session: AsyncSession, rows: Sequence[Recommendation]
) -> dict[uuid.UUID, dict[str, Any]]:
    """For each recommendation, what the API shows beside its row: the approvals it needs
    (from its device's safety policy) and its command's status. Two queries for a page."""
    devices = {r.device_id for r in rows}
    policies: dict[uuid.UUID, Any] = {}
    if devices:
        query = (
            select(Device.id, DeviceProfile.safety_policy)
            .join(DeviceProfile, DeviceProfile.id == Device.profile_id)
            .where(Device.id.in_(devices))
        )
        policies = {row[0]: row[1] for row in (await session.execute(query)).all()}
    command_ids = [r.command_id for r in rows if r.command_id is not None]
    statuses: dict[uuid.UUID, str] = {}
    if command_ids:
        query_status = select(DeviceCommand.id, DeviceCommand.status).where(
            DeviceCommand.id.in_(command_ids)
        )
        statuses = {row[0]: row[1] for row in (await session.execute(query_status)).all()}
    return {
        r.id: {
            "approvals_needed": approvals_needed(policies.get(r.device_id), r.method),
            "command_status": statuses.get(r.command_id) if r.command_id else None,
        }
        for r in rows
    }


def approvals_needed(stored: object, method: str | None) -> int:
    """Approvals the method needs under a device's stored safety policy: two for a method the
    policy marks critical, else one (an inspection, or a policy that does not validate: the
    validator refuses that anyway)."""
    if method is None or not isinstance(stored, dict):
        return 1
    try:
        policy = SafetyPolicy.model_validate(stored)
    except ValidationError:
        return 1
    rules = policy.methods.get(method)
    return needed(rules is not None and rules.critical)


def _audit(
    session: AsyncSession,
    principal: Principal | None,
    action: str,
    recommendation: Recommendation | _Seen,
    **details: Any,
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=recommendation.organization_id,
        target_type="recommendation",
        target_id=recommendation.id,
        outcome="denied" if action.endswith("refused") else "success",
        details={
            "device_id": str(recommendation.device_id),
            "kind": recommendation.kind,
            "status": recommendation.status,
            **details,
        },
    )


async def _move(
    session: AsyncSession,
    *where: ColumnElement[bool],
    expected: Iterable[str],
    **values: Any,
) -> list[Recommendation]:
    """Change the matching recommendations still in an `expected` state; returns those
    changed. UPDATE ... WHERE status IN (expected) RETURNING: a row another decision took
    first is simply not returned. The caller commits."""
    statement = (
        update(Recommendation)
        .where(*where, Recommendation.status.in_(list(expected)))
        .values(updated_at=utcnow(), **values)
        .returning(Recommendation)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list((await session.scalars(statement)).all())


def _unchanged(seen: _Seen) -> tuple[ColumnElement[bool], ...]:
    """This recommendation, as long as nobody changed it since it was read."""
    return (Recommendation.id == seen.id, Recommendation.updated_at == seen.updated_at)


@dataclass(frozen=True, slots=True)
class _Seen:
    """What was read of a recommendation (a rollback expires the ORM object, and reading it
    again would fetch a newer version than the one decided on)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    device_id: uuid.UUID
    kind: str
    status: str
    updated_at: datetime

    @classmethod
    def of(cls, row: Recommendation) -> _Seen:
        return cls(row.id, row.organization_id, row.device_id, row.kind, row.status, row.updated_at)


def _role(principal: Principal) -> str:
    return Role.ADMIN.value if principal.is_superuser else principal.role.value


async def _open(
    session: AsyncSession, principal: Principal, recommendation_id: uuid.UUID
) -> Recommendation:
    """The recommendation, if a person may still decide it (proposed, not past its time)."""
    recommendation = await get_recommendation(session, principal, recommendation_id)
    if recommendation.status != S.PROPOSED:
        raise Conflict(
            f"the recommendation is {recommendation.status}; only a proposed one can be decided",
            code="RECOMMENDATION_NOT_PROPOSED",
            details={"status": recommendation.status},
        )
    if recommendation.expires_at <= utcnow():
        await _move(
            session, *_unchanged(_Seen.of(recommendation)), expected=S.OPEN, status=S.EXPIRED
        )
        await session.commit()
        raise Conflict(
            "the recommendation expired before anyone decided it",
            code="RECOMMENDATION_NOT_PROPOSED",
            details={"status": S.EXPIRED},
        )
    return recommendation


async def approve(
    session: AsyncSession,
    principal: Principal,
    commands: CommandService,
    recommendation_id: uuid.UUID,
    *,
    note: str = "",
) -> Recommendation:
    """Approve (operators): an inspection is approved at once; an action becomes a command
    when the safety gate passes with the approvals so far, stays proposed with this approval
    stored while only approvals are missing, and is refused (SafetyRefused) otherwise."""
    principal.require(Role.OPERATOR)
    for _ in range(_ATTEMPTS):
        try:
            return await _approve_once(session, principal, commands, recommendation_id, note)
        except _Changed:
            await session.rollback()
    raise Conflict(
        "the recommendation kept changing while being approved; retry",
        code="RECOMMENDATION_CONFLICT",
    )


async def _approve_once(
    session: AsyncSession,
    principal: Principal,
    commands: CommandService,
    recommendation_id: uuid.UUID,
    note: str,
) -> Recommendation:
    recommendation = await _open(session, principal, recommendation_id)
    seen = _Seen.of(recommendation)
    live = await session.scalar(
        live_devices(principal.org_id)
        .with_only_columns(Device.id)
        .where(Device.id == recommendation.device_id)
    )
    if live is None:
        raise Conflict("the recommendation's device was deleted", code="RECOMMENDATION_DEVICE_GONE")
    now = utcnow()
    me = {
        "by": str(principal.subject_id),
        "role": _role(principal),
        "at": now.isoformat(),
        "note": note,
    }
    approvals = [*recommendation.approvals, me]
    decided = {
        "approvals": approvals,
        "decided_by": principal.user_id,
        "decided_at": now,
        "decision_note": note,
        "safety": [],
    }
    if recommendation.method is None:  # an inspection: nothing to send, a person looks
        moved = await _move(
            session, *_unchanged(seen), expected=S.OPEN, status=S.APPROVED, **decided
        )
        if not moved:
            raise _Changed
        _audit(session, principal, "recommendation.approve", moved[0], approvals=len(approvals))
        await session.commit()
        return moved[0]
    try:
        data = CommandIn(
            method=recommendation.method,
            params=recommendation.params or {},
            timeout_s=COMMAND_TIMEOUT_S,
            persistent=True,
        )
    except ValidationError:
        raise Invalid(
            "the recommendation's command is not a valid command",
            code="RECOMMENDATION_INVALID",
        ) from None

    async def claim(command_session: AsyncSession, command: DeviceCommand) -> None:
        # In the command's transaction: if another decision won meanwhile, raising here rolls
        # the command back with it.
        moved = await _move(
            command_session,
            *_unchanged(seen),
            expected=S.OPEN,
            status=S.APPROVED,
            command_id=command.id,
            **decided,
        )
        if not moved:
            raise _Changed
        _audit(
            command_session,
            principal,
            "recommendation.approve",
            moved[0],
            approvals=len(approvals),
            command_id=str(command.id),
        )

    try:
        await commands_service.create_command(
            session,
            principal,
            commands,
            recommendation.device_id,
            data=data,
            approvals=[Approval(by=a["by"], role=a["role"]) for a in approvals],
            requested_by=REQUESTER,
            audit_details={"recommendation_id": str(seen.id)},
            on_created=claim,
        )
    except SafetyRefused as refused:
        if refused.verdict.awaiting_approval:
            return await _store_approval(session, principal, seen, approvals, note)
        await _store_refusal(session, principal, seen, refused)
        raise
    return await get_recommendation(session, principal, seen.id)


async def _store_approval(
    session: AsyncSession,
    principal: Principal,
    seen: _Seen,
    approvals: list[dict[str, Any]],
    note: str,
) -> Recommendation:
    """Sound so far, waiting for more people: keep it proposed with this approval."""
    moved = await _move(
        session,
        *_unchanged(seen),
        expected=S.OPEN,
        approvals=approvals,
        safety=[],
    )
    if not moved:
        raise _Changed
    _audit(
        session,
        principal,
        "recommendation.approve",
        moved[0],
        approvals=len(approvals),
        note=note,
        waiting=True,
    )
    await session.commit()
    return moved[0]


async def _store_refusal(
    session: AsyncSession, principal: Principal, seen: _Seen, refused: SafetyRefused
) -> None:
    """The validator said no: keep its reasons for display, audit the attempt, nothing else."""
    reasons = [reason.as_dict() for reason in refused.verdict.reasons]
    moved = await _move(session, Recommendation.id == seen.id, expected=S.OPEN, safety=reasons)
    _audit(
        session,
        principal,
        "recommendation.approve_refused",
        moved[0] if moved else seen,
        reasons=refused.verdict.codes,
    )
    await session.commit()


async def reject(
    session: AsyncSession, principal: Principal, recommendation_id: uuid.UUID, *, reason: str
) -> Recommendation:
    """Reject a proposed recommendation (operators), saying why."""
    principal.require(Role.OPERATOR)
    for _ in range(_ATTEMPTS):
        recommendation = await _open(session, principal, recommendation_id)
        moved = await _move(
            session,
            *_unchanged(_Seen.of(recommendation)),
            expected=S.OPEN,
            status=S.REJECTED,
            decided_by=principal.user_id,
            decided_at=utcnow(),
            decision_note=reason,
        )
        if moved:
            _audit(session, principal, "recommendation.reject", moved[0], reason=reason)
            await session.commit()
            return moved[0]
        await session.rollback()
    raise Conflict("the recommendation kept changing; retry", code="RECOMMENDATION_CONFLICT")


async def mark_done(
    session: AsyncSession, principal: Principal, recommendation_id: uuid.UUID, *, note: str = ""
) -> Recommendation:
    """An approved inspection was carried out (operators): approved -> executed. A
    recommendation with a command is executed when its command succeeds, not by hand."""
    principal.require(Role.OPERATOR)
    recommendation = await get_recommendation(session, principal, recommendation_id)
    if recommendation.method is not None:
        raise Conflict(
            "only an inspection is marked done; a command's outcome decides the others",
            code="RECOMMENDATION_NOT_INSPECTION",
        )
    moved = await _move(
        session,
        Recommendation.id == recommendation.id,
        expected=(S.APPROVED,),
        status=S.EXECUTED,
    )
    if not moved:
        raise Conflict(
            f"the recommendation is {recommendation.status}; only an approved one can be done",
            code="RECOMMENDATION_NOT_APPROVED",
            details={"status": recommendation.status},
        )
    _audit(session, principal, "recommendation.done", moved[0], note=note)
    await session.commit()
    return moved[0]


# -- periodic jobs -------------------------------------------------------------------------


async def expire_due(db: Database, *, now: datetime | None = None, batch: int = BATCH) -> int:
    """Move up to `batch` proposed recommendations past their expires_at to expired;
    returns how many moved (idempotent: run it again and it finds the rest)."""
    now = now or utcnow()
    async with db.session(write=True) as session:
        due = (
            await session.scalars(
                select(Recommendation.id)
                .where(Recommendation.status == S.PROPOSED, Recommendation.expires_at <= now)
                .order_by(Recommendation.expires_at)
                .limit(batch)
            )
        ).all()
        if not due:
            return 0
        moved = await _move(
            session,
            Recommendation.id.in_(list(due)),
            Recommendation.expires_at <= now,
            expected=S.OPEN,
            status=S.EXPIRED,
        )
        await session.commit()
        return len(moved)


async def sync_commands(db: Database, *, batch: int = BATCH) -> int:
    """Move up to `batch` approved recommendations whose command ended: executed if it
    succeeded, failed if it failed, expired or was cancelled; returns how many moved."""
    async with db.session(write=True) as session:
        ended = (
            await session.execute(
                select(Recommendation.id, DeviceCommand.status)
                .join(DeviceCommand, DeviceCommand.id == Recommendation.command_id)
                .where(
                    Recommendation.status == S.APPROVED,
                    DeviceCommand.status.in_([str(s) for s in ENDED]),
                )
                .order_by(Recommendation.decided_at)
                .limit(batch)
            )
        ).all()
        count = 0
        for to in (S.EXECUTED, S.FAILED):
            ids = [row_id for row_id, status in ended if ENDED[CommandStatus(status)] == to]
            if ids:
                moved = await _move(
                    session, Recommendation.id.in_(ids), expected=(S.APPROVED,), status=to
                )
                count += len(moved)
        await session.commit()
        return count
