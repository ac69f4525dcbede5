"""Device commands API: users send and follow them; devices fetch and answer over HTTP
(native routes under /api/v1/devices/me, ThingsBoard's /api/v1/{token}/rpc)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, status

from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import read_body
from fleetcore.commands import service
from fleetcore.commands.delivery import MAX_RESULT_BYTES, MAX_RPC_ID
from fleetcore.commands.deps import CommandsDep
from fleetcore.commands.models import CommandStatus
from fleetcore.commands.schemas import (
    CommandIn,
    CommandOut,
    CommandResultIn,
    DeviceCommandOut,
    PolledCommands,
    ResultAccepted,
    ThingsBoardRpc,
)
from fleetcore.deps import SessionDep
from fleetcore.device_messages import http as device_http
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.auth_cache import HeaderIngestDevice, PathIngestDevice
from fleetcore.errors import Invalid, RequestTimeout
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.web.errors import documented_errors

router = APIRouter(prefix="/api/v1", tags=["commands"])

MAX_WAIT_S = 60


def _device_messages(request: Request) -> DeviceMessages:
    layer: DeviceMessages = request.app.state.device_messages
    return layer


# Devices' results go through the device-message layer, as they do over MQTT.
DeviceMessagesDep = Annotated[DeviceMessages, Depends(_device_messages)]


# /devices/me/... comes before /devices/{device_id:uuid}/... so "me" is never read as an id.
@router.get("/devices/me/commands", summary="Fetch commands (device token, long-poll)")
async def poll_commands(
    session: SessionDep,
    commands: CommandsDep,
    layer: DeviceMessagesDep,
    device: HeaderIngestDevice,
    wait_s: Annotated[
        float,
        Query(alias="timeout", ge=0, description=f"seconds to wait for one (at most {MAX_WAIT_S})"),
    ] = 30,
    limit: Annotated[int, Query(ge=1, le=100)] = 100,
) -> PolledCommands:
    """The queued commands, oldest first, now delivered; waits for one if there is none."""
    layer.note_traffic(device)  # a poll is the device's traffic: online, last seen
    found = await service.poll(
        session,
        commands,
        device,
        timeout_s=min(wait_s, MAX_WAIT_S),
        limit=limit,
        channel="http",
    )
    return PolledCommands(commands=[DeviceCommandOut.model_validate(c) for c in found])


@router.post(
    "/devices/me/commands/{command_id:uuid}/result", summary="Answer a command (device token)"
)
async def post_result(
    command_id: uuid.UUID,
    data: CommandResultIn,
    layer: DeviceMessagesDep,
    device: HeaderIngestDevice,
) -> ResultAccepted:
    """{"status": "succeeded", "result": ...} or {"status": "failed", "error": "..."}."""
    command = await device_http.command_result(
        layer,
        device,
        command_id=command_id,
        succeeded=data.status == "succeeded",
        result=data.result,
        error=data.error,
    )
    return ResultAccepted(id=command.id, status=CommandStatus(command.status))


@router.post(
    "/devices/{device_id:uuid}/commands",
    status_code=status.HTTP_201_CREATED,
    summary="Send a command to a device",
)
async def create_command(
    device_id: uuid.UUID,
    data: CommandIn,
    session: SessionDep,
    principal: PrincipalDep,
    commands: CommandsDep,
) -> CommandOut:
    """Operators and above. Sent at once if the device is online; else queued (persistent)
    or failed with "device offline"."""
    command = await service.create_command(session, principal, commands, device_id, data=data)
    return CommandOut.model_validate(command)


@router.get("/devices/{device_id:uuid}/commands", summary="A device's commands")
async def list_commands(
    device_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    status: CommandStatus | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[CommandOut]:
    """Newest first."""
    rows, next_cursor = await service.list_commands(
        session, principal, device_id, status=status, cursor=cursor, limit=limit
    )
    return Page(items=[CommandOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/devices/{device_id:uuid}/commands/{command_id:uuid}", summary="One command")
async def get_command(
    device_id: uuid.UUID, command_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> CommandOut:
    """Its state, result or error, and when it reached each state."""
    command = await service.get_command(session, principal, device_id, command_id)
    return CommandOut.model_validate(command)


@router.post(
    "/devices/{device_id:uuid}/commands/{command_id:uuid}/cancel", summary="Cancel a command"
)
async def cancel_command(
    device_id: uuid.UUID,
    command_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    commands: CommandsDep,
) -> CommandOut:
    """Operators and above, while queued or sent; 409 once delivered or finished."""
    command = await service.cancel_command(session, principal, commands, device_id, command_id)
    return CommandOut.model_validate(command)


# -- ThingsBoard-compatible HTTP RPC ------------------------------------------------------


@router.get(
    "/{token}/rpc",
    summary="Fetch one RPC (ThingsBoard, long-poll)",
    responses=documented_errors(408),
)
async def thingsboard_poll(
    session: SessionDep,
    commands: CommandsDep,
    layer: DeviceMessagesDep,
    device: PathIngestDevice,
    wait_ms: Annotated[
        int,
        Query(
            alias="timeout", ge=0, description=f"milliseconds to wait (at most {MAX_WAIT_S * 1000})"
        ),
    ] = 30_000,
) -> ThingsBoardRpc:
    """The oldest queued command as {"id", "method", "params"}; 408 if none came in time."""
    layer.note_traffic(device)
    found = await service.poll(
        session,
        commands,
        device,
        timeout_s=min(wait_ms, MAX_WAIT_S * 1000) / 1000,
        limit=1,
        channel="thingsboard_http",
    )
    if not found:
        raise RequestTimeout("no command within the timeout", code="NO_COMMAND")
    return ThingsBoardRpc(id=found[0].rpc_id, method=found[0].method, params=found[0].params)


_ANY_JSON: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {}, "example": {"result": "ok"}}},
    }
}


@router.post(
    "/{token}/rpc/{request_id}",
    summary="Answer an RPC (ThingsBoard)",
    openapi_extra=_ANY_JSON,
)
async def thingsboard_result(
    request: Request,
    request_id: Annotated[int, Path(ge=1, le=MAX_RPC_ID)],
    layer: DeviceMessagesDep,
    device: PathIngestDevice,
) -> ResultAccepted:
    """Any JSON body: the command succeeded with it as the result."""
    body = await read_body(request, MAX_RESULT_BYTES)
    try:
        result = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Invalid("the body is not JSON", code="BAD_JSON") from None
    command = await device_http.command_result(
        layer, device, rpc_id=request_id, succeeded=True, result=result
    )
    return ResultAccepted(id=command.id, status=CommandStatus(command.status))
