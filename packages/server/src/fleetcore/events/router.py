"""Device events API: devices send under /api/v1/devices/me, users read per device."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status

from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import body_limit, read_body
from fleetcore.config import MEDIA_REQUEST_CEILING
from fleetcore.deps import DatabaseDep, SessionDep, SettingsDep
from fleetcore.device_messages import http as device_http
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.deps import CurrentDevice
from fleetcore.events import service
from fleetcore.events.codec import MAX_EVENTS
from fleetcore.events.schemas import EventOut, EventsStored, Severity
from fleetcore.media import multipart
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore_protocol.messages import Event

router = APIRouter(prefix="/api/v1", tags=["events"])

# 100 events with 16 KiB of data each fit; the MQTT limit is the profile's max_payload_bytes.
MAX_BODY_BYTES = 2 * 1024 * 1024

_EVENT_EXAMPLE = {"type": "door_open", "severity": "info", "data": {"door": 1}, "ts": 1795300000000}
_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["type"]},
                        {"type": "array", "items": {"type": "object"}, "maxItems": MAX_EVENTS},
                    ]
                },
                "examples": {
                    "one event": {"value": _EVENT_EXAMPLE},
                    "several": {"value": [_EVENT_EXAMPLE, {"type": "reboot"}]},
                },
            },
            # Events with images (docs/media.md): `media` names the file parts an event owns.
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["event"],
                    "properties": {
                        "event": {"type": "string", "description": "the events' JSON"},
                        "image": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


# /devices/me/... comes before /devices/{device_id:uuid}/... so "me" is never read as an id.
@router.post(
    "/devices/me/events",
    status_code=status.HTTP_201_CREATED,
    summary="Send events (device token)",
    openapi_extra=_BODY_DOC,
    response_model_exclude_none=True,
)
# The JSON body keeps its 2 MiB (read_body); multipart is capped by
# FLEETCORE_MEDIA_REQUEST_MAX_BYTES as it streams, under this ceiling.
@body_limit(MEDIA_REQUEST_CEILING)
async def post_events(
    request: Request,
    session: SessionDep,
    database: DatabaseDep,
    device: CurrentDevice,
    settings: SettingsDep,
) -> EventsStored:
    """One event object or an array of up to 100; one bad event refuses them all (422).
    As multipart/form-data: the part `event` and 1-8 images (docs/media.md)."""
    layer: DeviceMessages = request.app.state.device_messages
    if multipart.is_multipart(request):
        await device_http.take_message(layer, device.organization_id)  # the plan's rate
        stored, media = await multipart.store_event_request(
            request,
            session,
            device,
            hooks=layer.event_hooks,
            settings=settings,
            store=request.app.state.media_store,
            write_turn=database.write_turn(),
        )
        return EventsStored(stored=stored, media=media)
    body = await read_body(request, MAX_BODY_BYTES)
    return EventsStored(stored=await device_http.device_events(layer, session, device, Event(body)))


@router.get("/devices/{device_id:uuid}/events", summary="A device's events")
async def list_events(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    type: Annotated[str | None, Query(max_length=64)] = None,
    severity: Severity | None = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[EventOut]:
    """Newest first by the device's time; a time without offset is UTC."""
    filters = service.EventFilter(type=type, severity=severity, since=since, until=until)
    rows, next_cursor = await service.list_events(
        session, principal, device_id, filters=filters, cursor=cursor, limit=limit
    )
    return Page(items=[EventOut.model_validate(r) for r in rows], next_cursor=next_cursor)
