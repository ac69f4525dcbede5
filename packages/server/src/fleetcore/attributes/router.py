"""Device attributes API: users under /api/v1/devices/{id}, devices under /api/v1/devices/me."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, status

from fleetcore.attributes import service
from fleetcore.attributes.schemas import AttributeScope, DesiredOut, DeviceAttributesOut, ScopeOut
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.device_messages import http as device_http
from fleetcore.devices.deps import CurrentDevice, PathTokenDevice
from fleetcore.errors import RequestTimeout
from fleetcore.web.errors import ErrorEnvelope
from fleetcore_protocol.messages import ClientAttributes

router = APIRouter(prefix="/api/v1", tags=["attributes"])

AttributeValues = Annotated[
    dict[str, Any],
    Body(description="key → JSON value; null deletes the key", examples=[{"fw": "1.2.0"}]),
]


# /devices/me/... comes before /devices/{device_id:uuid}/... so "me" is never read as an id.
@router.post("/devices/me/attributes", summary="Report client attributes (device)")
async def report_attributes(
    request: Request, values: AttributeValues, session: SessionDep, device: CurrentDevice
) -> ScopeOut:
    """The device merges what it reports into its client scope; null deletes a key."""
    layer = request.app.state.device_messages
    return await device_http.client_attributes(layer, session, device, ClientAttributes(values))


@router.get("/devices/me/attributes", summary="Desired configuration (device; long-poll)")
async def desired_attributes(
    request: Request,
    session: SessionDep,
    device: CurrentDevice,
    after_version: Annotated[
        int | None,
        Query(ge=0, description="long-poll: answer once the version is past this one"),
    ] = None,
    wait_s: Annotated[
        float, Query(alias="timeout", gt=0, le=60, description="long-poll seconds")
    ] = 30,
) -> DesiredOut:
    """The shared attributes the device should apply, and their version. With
    `after_version`, waits (up to `timeout` s) for a newer version; on timeout it answers
    the current state (the same version: nothing changed)."""
    if after_version is not None:
        await session.close()  # hold no connection while waiting
        desired = await request.app.state.desired.wait_for_change(device.id, after_version, wait_s)
        if desired is not None:
            return DesiredOut.model_validate(desired)
    return await service.desired_for_device(session, device)


@router.get(
    "/{token}/attributes/updates",
    summary="Shared attribute updates (ThingsBoard-compatible long-poll)",
    responses={408: {"model": ErrorEnvelope, "description": "no update within the timeout"}},
)
async def thingsboard_attribute_updates(
    request: Request,
    session: SessionDep,
    device: PathTokenDevice,
    wait_ms: Annotated[
        int, Query(alias="timeout", gt=0, le=60_000, description="milliseconds")
    ] = 30_000,
) -> dict[str, Any]:
    """Answers the shared attributes when they next change (ThingsBoard's shape: key ->
    value); 408 when nothing changed within the timeout."""
    current = await service.shared_version(session, device.id)
    await session.close()
    desired = await request.app.state.desired.wait_for_change(device.id, current, wait_ms / 1000)
    if desired is None:
        raise RequestTimeout("no attribute update within the timeout", code="NO_UPDATE")
    shared: dict[str, Any] = desired["shared"]
    return shared


@router.get("/devices/{device_id:uuid}/attributes", summary="A device's attributes")
async def get_attributes(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DeviceAttributesOut:
    """Server, shared and client scopes, and which desired keys the device has not applied."""
    return await service.get_attributes(session, principal, device_id)


@router.get(
    "/devices/{device_id:uuid}/attributes/{scope}", summary="One scope of a device's attributes"
)
async def get_scope(
    device_id: uuid.UUID, scope: AttributeScope, session: SessionDep, principal: PrincipalDep
) -> ScopeOut:
    """Keys with values, the version each last changed at, and the scope's version."""
    return await service.get_scope(session, principal, device_id, scope=scope)


@router.put("/devices/{device_id:uuid}/attributes/{scope}", summary="Set attributes")
async def update_scope(
    device_id: uuid.UUID,
    scope: AttributeScope,
    values: AttributeValues,
    session: SessionDep,
    principal: PrincipalDep,
) -> ScopeOut:
    """Merge into the server or shared scope (managers); the client scope is the device's."""
    return await service.update_scope(session, principal, device_id, scope=scope, values=values)


@router.delete(
    "/devices/{device_id:uuid}/attributes/{scope}/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an attribute",
)
async def delete_attribute(
    device_id: uuid.UUID,
    scope: AttributeScope,
    key: str,
    session: SessionDep,
    principal: PrincipalDep,
) -> None:
    """Remove one key of the server or shared scope (managers)."""
    await service.delete_attribute(session, principal, device_id, scope=scope, key=key)
