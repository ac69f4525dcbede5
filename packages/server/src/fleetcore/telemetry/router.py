"""Telemetry HTTP API: device ingest (native and ThingsBoard-compatible).

The hot path of the HTTP API: a device posting one reading should cost little more than
FastAPI parsing a body. So each route is one coroutine called directly (_LeanRoute: no
dependency to solve, no query, header or cookie parsing, no response model to validate): the
pipeline's room is checked first (a refusal under load costs no database work), the token
is answered by the token cache (a session is opened only when it misses), the body is read
under its limit, and the answer is JSON bytes made once per shape (no pydantic round trip).
The answer still waits for the commit of the batch holding the readings (the pipeline's
group commit): a 2xx means stored. Both routes are served by the device lane
(fleetcore.web.device_lane), ahead of the general middleware stack.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from fleetcore.body_limit import read_body
from fleetcore.db import Database
from fleetcore.device_messages import http as device_http
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.auth_cache import (
    DEVICE_TOKEN_SECURITY,
    IngestDevice,
    device_of_token,
    header_token,
)
from fleetcore.telemetry.ingest import LIMITS
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore_protocol.messages import Telemetry


class _LeanRoute(APIRoute):
    """A route whose endpoint takes the Request (and its path parameters, all strings) and
    returns a Response: FastAPI's per-request dependency solving (query, header and cookie
    parsing included) is skipped. FastAPI still documents it from the endpoint's signature,
    so such an endpoint declares no dependency and no parameter that needs converting."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Call the endpoint directly."""
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request, **request.path_params)
            return response

        return handle


# Two routers: the native route holds a fixed path and can be matched first (the API has
# hundreds of routes, matched in order); the ThingsBoard route's {token} segment would
# shadow other routes, so it is matched last (see fleetcore/routers.py).
router = APIRouter(prefix="/api/v1", tags=["telemetry"], route_class=_LeanRoute)
thingsboard_router = APIRouter(prefix="/api/v1", tags=["telemetry"], route_class=_LeanRoute)


class IngestAnswer(BaseModel):
    """What happened to the readings of one request (all of it committed)."""

    stored: int
    duplicates: int
    rejected: list[dict[str, Any]]
    flagged: list[dict[str, Any]]


_PLAIN_ANSWERS: dict[tuple[int, int], bytes] = {}  # (stored, duplicates) -> the answer's bytes
_PLAIN_ANSWERS_MAX = 4096  # bound: one entry per shape seen, in practice a few dozen


def _answer_bytes(answer: dict[str, Any]) -> bytes:
    """The answer as JSON; one with nothing rejected or flagged (nearly all) made once."""
    if answer["rejected"] or answer["flagged"]:
        return orjson.dumps(answer)
    key = (answer["stored"], answer["duplicates"])
    body = _PLAIN_ANSWERS.get(key)
    if body is None:
        body = orjson.dumps(answer)
        if len(_PLAIN_ANSWERS) < _PLAIN_ANSWERS_MAX:
            _PLAIN_ANSWERS[key] = body
    return body


async def _ingest(request: Request, token: str | None) -> Response:
    """Both ingest routes: room, device, body, store; answer after the commit."""
    app_state = request.app.state
    pipeline: IngestPipeline = app_state.pipeline
    # 503 at once while the pipeline is full, before the token is looked up or the body
    # read: under load (a slow database) a refusal then costs no database work.
    pipeline.check_room()
    database: Database = app_state.database
    device: IngestDevice = await device_of_token(
        database, header_token(request) if token is None else token
    )
    layer: DeviceMessages = app_state.device_messages
    layer.note_traffic(device)  # as it arrives, before the body: online, last seen
    body = await read_body(request, LIMITS.max_bytes)
    answer = await device_http.telemetry(layer, device, Telemetry(body))
    return Response(_answer_bytes(answer), media_type="application/json")


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
    response_model=IngestAnswer,
    openapi_extra={**_BODY_DOC, "security": DEVICE_TOKEN_SECURITY},
)
async def post_telemetry(request: Request) -> Response:
    """Answers after the readings are committed; bad items are named, good ones stored."""
    return await _ingest(request, None)


@thingsboard_router.post(
    "/{token}/telemetry",
    summary="Send telemetry (ThingsBoard-compatible, token in the path)",
    response_model=IngestAnswer,
    openapi_extra=_BODY_DOC,
)
async def post_telemetry_tb(request: Request, token: str) -> Response:
    """Same as /devices/me/telemetry, for existing ThingsBoard firmware."""
    return await _ingest(request, token)
