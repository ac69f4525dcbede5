"""Alert pages: the list (filters, live), one alert with its comments, and the operators'
acknowledge, clear and comment buttons (htmx, or plain forms without JavaScript)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service
from fleetcore.alerts.deps import BusDep
from fleetcore.alerts.models import Alert, AlertStatus, Severity
from fleetcore.alerts.schemas import CommentIn
from fleetcore.auth.principal import Principal, Role
from fleetcore.dashboard.web import Context, PageWriter, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import service as devices
from fleetcore.errors import Invalid

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
HEAD_TARGET = "alert-head"  # the detail page's htmx target; other targets get a list row


E = TypeVar("E", AlertStatus, Severity)


def _choice(kind: type[E], value: str | None, field: str) -> E | None:
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise Invalid(
            f"{field} must be one of {allowed}", code="INVALID_FILTER", details={"field": field}
        ) from None


def _device_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        raise Invalid(
            "device is not an id", code="INVALID_ID", details={"field": "device"}
        ) from None


async def _names(
    session: SessionDep, principal: Principal, alerts: Sequence[Alert]
) -> dict[str, Any]:
    """Device names and assignee emails for rows of alerts."""
    return {
        "device_names": await service.device_names(
            session, principal, {a.device_id for a in alerts}
        ),
        "assignees": await service.user_emails(
            session, principal, {a.assignee_id for a in alerts if a.assignee_id}
        ),
    }


@router.get("/alerts")
async def alert_list(
    request: Request,
    session: SessionDep,
    context: Context,
    status: Annotated[str | None, Query(max_length=16)] = None,
    severity: Annotated[str | None, Query(max_length=16)] = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    """Alerts, newest first; filter by status, severity and device. New ones arrive live."""
    principal = principal_of(context)
    filters = {"status": status or "", "severity": severity or "", "device": device or ""}
    rows, next_cursor = await service.list_alerts(
        session,
        principal,
        status=_choice(AlertStatus, status, "status"),
        severity=_choice(Severity, severity, "severity"),
        device_id=_device_id(device),
        rule_id=None,
        cursor=cursor or None,
        limit=PAGE_SIZE,
    )
    values: dict[str, Any] = {
        "alerts": rows,
        "next_cursor": next_cursor,
        "filters": filters,
        "can_write": principal.has(Role.OPERATOR),
        **await _names(session, principal, rows),
    }
    if is_fragment(request):
        return render(context, "alerts/_rows.html", **values)
    device_rows, _ = await devices.list_devices(
        session, principal, filters=devices.DeviceFilter(), sort="name", cursor=None, limit=500
    )
    return render(
        context,
        "alerts/list.html",
        statuses=list(AlertStatus),
        severities=list(Severity),
        devices=device_rows,
        **values,
    )


@router.get("/alerts/{alert_id}")
async def alert_page(
    alert_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    part: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    """One alert: its lifecycle, values, assignee and comments; `part` = row | head for the
    fragments the live updates swap in."""
    principal = principal_of(context)
    alert = await service.get_alert(session, principal, alert_id)
    if part in ("row", "head"):
        return _fragment(context, alert, await _names(session, principal, [alert]), part)
    comments = await service.list_comments(session, alert)
    people = {a for a in (alert.acknowledged_by, alert.cleared_by) if a}
    people |= {c.author_id for c in comments if c.author_id}
    names = await _names(session, principal, [alert])
    names["assignees"] |= await service.user_emails(session, principal, people)
    return render(
        context,
        "alerts/detail.html",
        alert=alert,
        comments=comments,
        can_write=principal.has(Role.OPERATOR),
        **names,
    )


def _fragment(
    context: dict[str, object], alert: Alert, names: dict[str, Any], part: str, status: int = 200
) -> HTMLResponse:
    principal = principal_of(context)
    template = "alerts/_head.html" if part == "head" else "alerts/_row.html"
    return render(
        context,
        template,
        status_code=status,
        alert=alert,
        can_write=principal.has(Role.OPERATOR),
        **names,
    )


async def _answer(
    request: Request, session: AsyncSession, context: dict[str, object], alert: Alert
) -> Response:
    """htmx gets the changed row (or the detail page's head); a plain form goes back."""
    if not is_fragment(request):
        return RedirectResponse(f"/alerts/{alert.id}", status_code=303)
    part = "head" if request.headers.get("HX-Target") == HEAD_TARGET else "row"
    names = await _names(session, principal_of(context), [alert])
    return _fragment(context, alert, names, part)


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(
    request: Request,
    alert_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    bus: BusDep,
) -> Response:
    """Operators: active -> acknowledged."""
    alert = await service.acknowledge(session, principal, bus, alert_id)
    return await _answer(request, session, context, alert)


@router.post("/alerts/{alert_id}/clear")
async def clear(
    request: Request,
    alert_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    bus: BusDep,
) -> Response:
    """Operators: clear by hand."""
    alert = await service.clear(session, principal, bus, alert_id)
    return await _answer(request, session, context, alert)


@router.post("/alerts/{alert_id}/assign")
async def assign(
    request: Request,
    alert_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    bus: BusDep,
    to: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """Operators: take the alert (to=me) or give it back (to=nobody)."""
    if to not in ("me", "nobody"):
        raise Invalid("to must be me or nobody", code="VALIDATION_ERROR", details={"field": "to"})
    assignee = principal.user_id if to == "me" else None
    alert = await service.assign(session, principal, bus, alert_id, assignee)
    return await _answer(request, session, context, alert)


@router.post("/alerts/{alert_id}/comments")
async def comment(
    request: Request,
    alert_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    bus: BusDep,
    text: Annotated[str, Form(max_length=8000)] = "",
) -> Response:
    """Operators: a comment; htmx gets its list item."""
    try:
        data = CommentIn(text=text)
    except ValidationError:
        raise Invalid(
            "a comment needs text (at most 4000 characters)",
            code="VALIDATION_ERROR",
            details={"field": "text"},
        ) from None
    found = await service.add_comment(session, principal, bus, alert_id, data.text)
    if not is_fragment(request):
        return RedirectResponse(f"/alerts/{alert_id}", status_code=303)
    me = {principal.user_id} if principal.user_id else set()
    authors = await service.user_emails(session, principal, me)
    return render(context, "alerts/_comment.html", c=found, assignees=authors, status_code=201)
