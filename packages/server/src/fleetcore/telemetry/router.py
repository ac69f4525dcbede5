"""Telemetry HTTP API: device ingest (native and ThingsBoard-compatible)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from fleetcore.body_limit import read_body
from fleetcore.deps import ReadSessionDep
from fleetcore.device_messages import http as device_http
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.auth_cache import HeaderIngestDevice, IngestDevice, PathIngestDevice
from fleetcore.telemetry.ingest import LIMITS
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore_protocol.messages import Telemetry


def _room_in_pipeline(request: Request) -> None:
    """503 at once while the pipeline is full, before the device's token is looked up or
    its body read: under load (a slow database) a refusal then costs no database work."""
    pipeline: IngestPipeline = request.app.state.pipeline
    pipeline.check_room()


# Route dependencies are resolved before the endpoint's own (the device's token).
router = APIRouter(prefix="/api/v1", tags=["telemetry"], dependencies=[Depends(_room_in_pipeline)])


class IngestAnswer(BaseModel):
    """What happened to the readings of one request (all of it committed)."""

    stored: int
    duplicates: int
    rejected: list[dict[str, Any]]
    flagged: list[dict[str, Any]]


async def _ingest_request(
    request: Request, session: ReadSessionDep, device: IngestDevice
) -> IngestAnswer:
    """Both ingest routes: read the body, store it, answer after the commit."""
    layer: DeviceMessages = request.app.state.device_messages
    layer.note_traffic(device)  # as it arrives, before the body: online, last seen
    body = await read_body(request, LIMITS.max_bytes)
    answer = await device_http.telemetry(layer, session, device, Telemetry(body))
    return IngestAnswer.model_validate(answer)


_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array"}]},
                "examples": {
                    "server time": {"value": {"temperature": 21.5, "door": "open"}},
                    "timestamped": {"value": {"ts": 1795300000000, "values": {"t": 21.5}}},
                },
            }
        },
    }
}


@router.post(
    "/devices/me/telemetry",
    summary="Send telemetry (device token)",
    openapi_extra=_BODY_DOC,
)
async def post_telemetry(
    request: Request, session: ReadSessionDep, device: HeaderIngestDevice
) -> IngestAnswer:
    """Answers after the readings are committed; bad items are named, good ones stored."""
    return await _ingest_request(request, session, device)


@router.post(
    "/{token}/telemetry",
    summary="Send telemetry (ThingsBoard-compatible, token in the path)",
    openapi_extra=_BODY_DOC,
)
async def post_telemetry_tb(
    request: Request, session: ReadSessionDep, device: PathIngestDevice
) -> IngestAnswer:
    """Same as /devices/me/telemetry, for existing ThingsBoard firmware."""
    return await _ingest_request(request, session, device)
