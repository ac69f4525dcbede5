"""Device pages: the list (filters, search, pages), one device (its sections gathered by
dashboard/device_page.py), the profiles."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from fleetcore.dashboard.device_page import device_sections
from fleetcore.dashboard.web import Context, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import profiles
from fleetcore.devices import service as devices
from fleetcore.devices.models import DeviceStatus
from fleetcore.errors import Invalid
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
    """Profile and labels, then every domain's section (dashboard/device_page.py): attributes,
    status history, health and wear, charts (anomalies marked), latest values, commands,
    events, open alerts."""
    principal = principal_of(context)
    device = await devices.get_device(session, principal, device_id)
    profile = (
        await profiles.get_profile(session, principal, device.profile_id)
        if device.profile_id
        else None
    )
    sections = await device_sections(session, principal, device)
    return render(context, "devices/detail.html", device=device, profile=profile, **sections)


@router.get("/profiles")
async def profile_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Device profiles of the organization."""
    rows = await profiles.list_profiles(session, principal_of(context), cursor=None, limit=500)
    return render(context, "devices/profiles.html", profiles=rows)
