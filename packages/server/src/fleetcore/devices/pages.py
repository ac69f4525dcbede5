"""Device pages: the list (filters, search, pages), one device, sending it a command."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from fleetcore.advisory import wording
from fleetcore.alerts import service as alerts
from fleetcore.analytics import queries as analytics_queries
from fleetcore.attributes import service as attributes
from fleetcore.auth.principal import Role
from fleetcore.commands import service as commands
from fleetcore.commands.schemas import MAX_TIMEOUT_S, CommandIn
from fleetcore.dashboard.web import Context, PageWriter, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import profiles
from fleetcore.devices import service as devices
from fleetcore.devices.models import DeviceStatus
from fleetcore.errors import Invalid
from fleetcore.events import service as events
from fleetcore.events.service import EventFilter
from fleetcore.status import service as status
from fleetcore.telemetry import queries

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
STATUSES = (DeviceStatus.PROVISIONED, DeviceStatus.ACTIVE, DeviceStatus.DISABLED)


@router.get("/devices")
async def device_list(
    request: Request,
    session: SessionDep,
    context: Context,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    label: Annotated[str | None, Query(max_length=64)] = None,
    profile: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    """Devices by name; filter by status, label and profile, search name and serial."""
    principal = principal_of(context)
    filters = devices.DeviceFilter(
        status=status if status in STATUSES else None,
        labels=(label,) if label else (),
        profile_id=_uuid_or_none(profile),
        q=q or None,
    )
    rows, next_cursor = await devices.list_devices(
        session, principal, filters=filters, sort="name", cursor=cursor or None, limit=PAGE_SIZE
    )
    latest = await queries.latest_of_devices(session, principal, device_ids=[d.id for d in rows])
    values: dict[str, Any] = {
        "devices": rows,
        "latest": latest.devices,
        "next_cursor": next_cursor,
        "filters": {"q": q or "", "status": status or "", "label": label or "", "profile": profile},
    }
    if is_fragment(request):
        return render(context, "devices/_rows.html", **values)
    profile_rows = await profiles.list_profiles(session, principal, cursor=None, limit=200)
    return render(context, "devices/list.html", profiles=profile_rows, statuses=STATUSES, **values)


def _uuid_or_none(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        raise Invalid(
            "profile is not an id", code="INVALID_ID", details={"field": "profile"}
        ) from None


@router.get("/devices/{device_id}")
async def device_page(device_id: uuid.UUID, session: SessionDep, context: Context) -> HTMLResponse:
    """Profile, labels, attributes, status history, health and wear, charts (anomalies marked),
    latest values, commands, events."""
    principal = principal_of(context)
    device = await devices.get_device(session, principal, device_id)
    profile = (
        await profiles.get_profile(session, principal, device.profile_id)
        if device.profile_id
        else None
    )
    latest = await queries.latest_of_device(session, principal, device_id=device.id)
    history, _ = await status.status_history(session, principal, device.id, cursor=None, limit=20)
    command_rows, _ = await commands.list_commands(
        session, principal, device.id, status=None, cursor=None, limit=10
    )
    event_rows, _ = await events.list_events(
        session, principal, device.id, filters=EventFilter(), cursor=None, limit=10
    )
    found = await analytics_queries.device_analytics(session, principal, device.id)
    numeric = sorted(
        k
        for k, v in latest.values.items()
        if isinstance(v.value, int | float) and not isinstance(v.value, bool)
    )
    return render(
        context,
        "devices/detail.html",
        device=device,
        profile=profile,
        attributes=await attributes.get_attributes(session, principal, device.id),
        latest=latest.values,
        numeric_keys=numeric,
        history=history,
        commands=command_rows,
        events=event_rows,
        open_alerts=await alerts.open_alerts_of_device(session, principal, device.id),
        can_command=principal.has(Role.OPERATOR),
        max_timeout_s=MAX_TIMEOUT_S,
        # The health section shows for a profile that watches keys, or a device scored before.
        analytics=found if found.configured or found.health is not None else None,
        **wording.FOR_TEMPLATES,
    )


@router.post("/devices/{device_id}/commands")
async def send_command(
    request: Request,
    device_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    method: Annotated[str, Form(max_length=64)] = "",
    params: Annotated[str, Form(max_length=20_000)] = "",
    timeout_s: Annotated[int, Form(ge=1, le=MAX_TIMEOUT_S)] = 30,
    persistent: Annotated[str | None, Form(max_length=8)] = None,
) -> HTMLResponse:
    """Operators: send a command from the form; answers its row for the commands table."""
    data = _command_in(method, params, timeout_s, persistent=bool(persistent))
    command = await commands.create_command(
        session, principal, request.app.state.commands, device_id, data=data
    )
    return render(context, "devices/_command_row.html", command=command, status_code=201)


def _command_in(method: str, params: str, timeout_s: int, *, persistent: bool) -> CommandIn:
    """The form's fields as the API's body; bad JSON or values are 422 naming the field."""
    try:
        parsed: Any = orjson.loads(params) if params.strip() else {}
    except orjson.JSONDecodeError:
        raise Invalid(
            "params must be a JSON object", code="INVALID_PARAMS", details={"field": "params"}
        ) from None
    try:
        return CommandIn(method=method, params=parsed, timeout_s=timeout_s, persistent=persistent)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "params"
        raise Invalid(
            f"{field}: {first['msg']}", code="VALIDATION_ERROR", details={"field": field}
        ) from None


@router.get("/profiles")
async def profile_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Device profiles of the organization."""
    rows = await profiles.list_profiles(session, principal_of(context), cursor=None, limit=500)
    return render(context, "devices/profiles.html", profiles=rows)
