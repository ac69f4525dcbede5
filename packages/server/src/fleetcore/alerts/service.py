"""Alerts: opened, repeated and cleared by the rules engine; listed, acknowledged, cleared,
commented and assigned by users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.events import AlertBus, AlertChange, stage
from fleetcore.alerts.models import OPEN_STATUSES, Alert, AlertComment, AlertStatus, Severity
from fleetcore.audit import service as audit
from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.rules.models import Rule, RuleState


class FiringRule(Protocol):
    """What an alert copies from its rule (a stored rule or the engine's compiled one)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def organization_id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def severity(self) -> str: ...


def at(ms: int) -> datetime:
    """An epoch-ms reading time as a datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


# -- the engine's side ---------------------------------------------------------------------


async def open_alert(
    session: AsyncSession, rule: FiringRule, device_id: uuid.UUID, ts: int, values: dict[str, Any]
) -> tuple[Alert, str]:
    """Open the rule's alert on the device, or count a repeat if one is open already."""
    alert = Alert(
        id=uuid.uuid4(),
        organization_id=rule.organization_id,
        rule_id=rule.id,
        device_id=device_id,
        name=rule.name,
        severity=rule.severity,
        status=AlertStatus.ACTIVE,
        count=1,
        details={"values": values},
        opened_at=at(ts),
        last_fired_at=at(ts),
    )
    try:
        async with session.begin_nested():
            session.add(alert)
            await session.flush()
    except IntegrityError:  # the database holds an open one (one per rule and device)
        existing = await session.scalar(
            select(Alert).where(
                Alert.rule_id == rule.id,
                Alert.device_id == device_id,
                Alert.status.in_(OPEN_STATUSES),
            )
        )
        if existing is None:
            raise
        repeated = await repeat_alert(session, existing.id, ts)
        return (repeated or existing), "repeated"
    return alert, "opened"


async def repeat_alert(session: AsyncSession, alert_id: uuid.UUID, ts: int) -> Alert | None:
    """Count another firing of an open alert; None if it is no longer open."""
    return await session.scalar(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status != AlertStatus.CLEARED)
        .values(count=Alert.count + 1, last_fired_at=at(ts), updated_at=utcnow())
        .returning(Alert)
        .execution_options(synchronize_session=False)
    )


async def clear_by_condition(
    session: AsyncSession, alert_id: uuid.UUID, ts: int, values: dict[str, Any]
) -> Alert | None:
    """Clear an open alert because its condition ended; None if it was not open."""
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.status == AlertStatus.CLEARED:
        return None
    # Conditional, so a user clearing it meanwhile is not cleared twice.
    return await session.scalar(
        update(Alert)
        .where(Alert.id == alert_id, Alert.status != AlertStatus.CLEARED)
        .values(
            status=AlertStatus.CLEARED,
            cleared_at=at(ts),
            clear_reason="condition",
            details={**alert.details, "cleared_values": values},
            updated_at=utcnow(),
        )
        .returning(Alert)
        .execution_options(populate_existing=True)
    )


async def close_for_rule(session: AsyncSession, rule: Rule, reason: str) -> list[AlertChange]:
    """Clear every open alert of a rule (disabled or deleted) and forget its state."""
    alerts = (
        await session.scalars(
            select(Alert).where(Alert.rule_id == rule.id, Alert.status.in_(OPEN_STATUSES))
        )
    ).all()
    changes = []
    now = utcnow()
    for alert in alerts:
        alert.status, alert.cleared_at, alert.clear_reason = AlertStatus.CLEARED, now, reason
        changes.append(await stage(session, alert, "cleared"))
    await session.execute(delete(RuleState).where(RuleState.rule_id == rule.id))
    return changes


# -- the users' side -------------------------------------------------------------------------


def _not_found() -> NotFound:
    return NotFound("alert not found", code="ALERT_NOT_FOUND")


async def get_alert(session: AsyncSession, principal: Principal, alert_id: uuid.UUID) -> Alert:
    """One alert of the caller's organization."""
    alert = await session.scalar(
        select(Alert).where(Alert.id == alert_id, Alert.organization_id == principal.org_id)
    )
    if alert is None:
        raise _not_found()
    return alert


async def list_comments(session: AsyncSession, alert: Alert) -> list[AlertComment]:
    """An alert's comments, oldest first."""
    query = (
        select(AlertComment)
        .where(AlertComment.alert_id == alert.id)
        .order_by(AlertComment.created_at, AlertComment.id)
    )
    return list((await session.scalars(query)).all())


async def list_alerts(
    session: AsyncSession,
    principal: Principal,
    *,
    status: AlertStatus | None,
    device_id: uuid.UUID | None,
    rule_id: uuid.UUID | None,
    severity: Severity | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Alert], str | None]:
    """The organization's alerts, newest first, filtered."""
    query = select(Alert).where(Alert.organization_id == principal.org_id)
    if status is not None:
        query = query.where(Alert.status == status)
    if device_id is not None:
        query = query.where(Alert.device_id == device_id)
    if rule_id is not None:
        query = query.where(Alert.rule_id == rule_id)
    if severity is not None:
        query = query.where(Alert.severity == severity)
    query = paginate(
        query,
        sort=Alert.opened_at,
        id_column=Alert.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="opened_at")


def _audit(session: AsyncSession, principal: Principal, action: str, alert: Alert) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=alert.organization_id,
        target_type="alert",
        target_id=alert.id,
        details={"device_id": str(alert.device_id), "status": alert.status},
    )


async def acknowledge(
    session: AsyncSession, principal: Principal, bus: AlertBus, alert_id: uuid.UUID
) -> Alert:
    """Active -> acknowledged (operators); repeating it changes nothing; 409 once cleared."""
    principal.require(Role.OPERATOR)
    alert = await get_alert(session, principal, alert_id)
    if alert.status == AlertStatus.ACKNOWLEDGED:
        return alert
    if alert.status == AlertStatus.CLEARED:
        raise Conflict("the alert is cleared already", code="ALERT_CLEARED")
    alert.status = AlertStatus.ACKNOWLEDGED
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by = principal.user_id
    _audit(session, principal, "alert.acknowledge", alert)
    change = await stage(session, alert, "acknowledged")
    await session.commit()
    bus.committed([change])
    return alert


async def clear(
    session: AsyncSession, principal: Principal, bus: AlertBus, alert_id: uuid.UUID
) -> Alert:
    """Clear by hand (operators); 409 if cleared already. The rule may open a new one."""
    principal.require(Role.OPERATOR)
    alert = await get_alert(session, principal, alert_id)
    if alert.status == AlertStatus.CLEARED:
        raise Conflict("the alert is cleared already", code="ALERT_CLEARED")
    alert.status = AlertStatus.CLEARED
    alert.cleared_at = utcnow()
    alert.cleared_by = principal.user_id
    alert.clear_reason = "manual"
    if alert.rule_id is not None:
        await session.execute(
            delete(RuleState).where(
                RuleState.rule_id == alert.rule_id, RuleState.device_id == alert.device_id
            )
        )
    _audit(session, principal, "alert.clear", alert)
    change = await stage(session, alert, "cleared")
    await session.commit()
    bus.committed([change])
    return alert


async def add_comment(
    session: AsyncSession, principal: Principal, bus: AlertBus, alert_id: uuid.UUID, text: str
) -> AlertComment:
    """Comment on an alert (operators)."""
    principal.require(Role.OPERATOR)
    alert = await get_alert(session, principal, alert_id)
    comment = AlertComment(
        organization_id=alert.organization_id,
        alert_id=alert.id,
        author_id=principal.user_id,
        text=text,
    )
    session.add(comment)
    alert.updated_at = utcnow()
    _audit(session, principal, "alert.comment", alert)
    change = await stage(session, alert, "commented", comment=text)
    await session.commit()
    bus.committed([change])
    return comment


async def assign(
    session: AsyncSession,
    principal: Principal,
    bus: AlertBus,
    alert_id: uuid.UUID,
    assignee_id: uuid.UUID | None,
) -> Alert:
    """Assign to a user of the organization, or unassign (operators)."""
    principal.require(Role.OPERATOR)
    alert = await get_alert(session, principal, alert_id)
    if assignee_id is not None:
        user = await session.get(User, assignee_id)
        if user is None or user.organization_id != alert.organization_id:
            raise Invalid(
                "the assignee is not a user of this organization",
                code="ASSIGNEE_NOT_FOUND",
                details={"field": "assignee_id"},
            )
    if alert.assignee_id == assignee_id:
        return alert
    alert.assignee_id = assignee_id
    alert.updated_at = utcnow()
    _audit(session, principal, "alert.assign", alert)
    change = await stage(session, alert, "assigned")
    await session.commit()
    bus.committed([change])
    return alert


async def user_emails(
    session: AsyncSession, principal: Principal, user_ids: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Emails of the organization's users among `user_ids` (assignees, authors)."""
    if not user_ids:
        return {}
    rows = await session.execute(
        select(User.id, User.email).where(
            User.id.in_(user_ids), User.organization_id == principal.org_id
        )
    )
    return {user_id: email for user_id, email in rows.all()}


async def open_alerts_of_device(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, limit: int = 50
) -> list[Alert]:
    """A device's active and acknowledged alerts, newest first."""
    query = (
        select(Alert)
        .where(
            Alert.organization_id == principal.org_id,
            Alert.device_id == device_id,
            Alert.status.in_(OPEN_STATUSES),
        )
        .order_by(Alert.opened_at.desc(), Alert.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def active_by_severity(session: AsyncSession, principal: Principal) -> dict[str, int]:
    """Active (not yet acknowledged) alerts of the organization per severity, every severity."""
    query = (
        select(Alert.severity, func.count())
        .where(Alert.organization_id == principal.org_id, Alert.status == AlertStatus.ACTIVE)
        .group_by(Alert.severity)
    )
    found = {severity.value: 0 for severity in Severity}
    for severity, count in (await session.execute(query)).all():
        found[str(severity)] = count
    return found


async def device_names(
    session: AsyncSession, principal: Principal, device_ids: set[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Names of the organization's devices among `device_ids` (deleted ones included)."""
    if not device_ids:
        return {}
    rows = await session.execute(
        select(Device.id, Device.name).where(
            Device.id.in_(device_ids), Device.organization_id == principal.org_id
        )
    )
    return {device_id: name for device_id, name in rows.all()}
