"""Alerts API: list, read, acknowledge, clear, comment, assign."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from fleetcore.alerts import service
from fleetcore.alerts.deps import BusDep
from fleetcore.alerts.models import AlertStatus, Severity
from fleetcore.alerts.schemas import AlertDetail, AlertOut, AlertPatch, CommentIn, CommentOut
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1", tags=["alerts"])


@router.get("/alerts", summary="List alerts")
async def list_alerts(
    session: SessionDep,
    principal: PrincipalDep,
    status: AlertStatus | None = None,
    device_id: uuid.UUID | None = None,
    rule_id: uuid.UUID | None = None,
    severity: Severity | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[AlertOut]:
    """Newest first."""
    rows, next_cursor = await service.list_alerts(
        session,
        principal,
        status=status,
        device_id=device_id,
        rule_id=rule_id,
        severity=severity,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[AlertOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/alerts/{alert_id:uuid}", summary="An alert and its comments")
async def get_alert(
    alert_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> AlertDetail:
    """One alert of the caller's organization."""
    alert = await service.get_alert(session, principal, alert_id)
    comments = await service.list_comments(session, alert)
    return AlertDetail.model_validate(
        {
            **AlertOut.model_validate(alert).model_dump(),
            "comments": [CommentOut.model_validate(c) for c in comments],
        }
    )


@router.post("/alerts/{alert_id:uuid}/acknowledge", summary="Acknowledge an alert")
async def acknowledge(
    alert_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, bus: BusDep
) -> AlertOut:
    """Operators and above."""
    return AlertOut.model_validate(await service.acknowledge(session, principal, bus, alert_id))


@router.post("/alerts/{alert_id:uuid}/clear", summary="Clear an alert")
async def clear(
    alert_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, bus: BusDep
) -> AlertOut:
    """Operators and above. If the condition still holds, the rule opens a new alert."""
    return AlertOut.model_validate(await service.clear(session, principal, bus, alert_id))


@router.post(
    "/alerts/{alert_id:uuid}/comments",
    status_code=status.HTTP_201_CREATED,
    summary="Comment on an alert",
)
async def comment(
    alert_id: uuid.UUID, data: CommentIn, session: SessionDep, principal: PrincipalDep, bus: BusDep
) -> CommentOut:
    """Operators and above."""
    found = await service.add_comment(session, principal, bus, alert_id, data.text)
    return CommentOut.model_validate(found)


@router.patch("/alerts/{alert_id:uuid}", summary="Assign an alert")
async def assign(
    alert_id: uuid.UUID, data: AlertPatch, session: SessionDep, principal: PrincipalDep, bus: BusDep
) -> AlertOut:
    """Operators and above: {"assignee_id": user id or null}."""
    alert = await service.assign(session, principal, bus, alert_id, data.assignee_id)
    return AlertOut.model_validate(alert)
