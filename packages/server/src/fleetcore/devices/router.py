"""The device registry API under /api/v1: profiles, devices, credentials, provisioning."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from fleetcore.auth.deps import PrincipalDep
from fleetcore.body_limit import body_limit
from fleetcore.deps import SessionDep
from fleetcore.devices import importing, profiles, provisioning, service
from fleetcore.devices.deps import MAX_CSV_BYTES, MULTIPART_OVERHEAD, CsvUpload, CurrentDevice
from fleetcore.devices.profile_schemas import ProfileIn, ProfileOut, ProfilePatch, ProfileSaved
from fleetcore.devices.schemas import (
    MAX_LABELS,
    DeviceCreated,
    DeviceIn,
    DeviceMe,
    DeviceOut,
    DevicePatch,
    DeviceToken,
    ImportResult,
    Label,
    ProvisionIn,
    SearchText,
    Sort,
    Status,
)
from fleetcore.pagination import CursorQuery, LimitQuery, Page, encode_cursor

router = APIRouter(prefix="/api/v1", tags=["devices"])

_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    # The form parser refuses more parts (max_fields=4, max_files=1): 400.
                    "maxProperties": 4,
                }
            }
        },
    }
}


# -- profiles ----------------------------------------------------------------------------


@router.post(
    "/device-profiles", status_code=status.HTTP_201_CREATED, summary="Create a device profile"
)
async def create_profile(
    body: ProfileIn, session: SessionDep, principal: PrincipalDep
) -> ProfileSaved:
    """Managers. A generated provision_secret is in this answer only."""
    profile, secret = await profiles.create_profile(session, principal, data=body)
    return ProfileSaved(**ProfileOut.model_validate(profile).model_dump(), provision_secret=secret)


@router.get("/device-profiles", summary="List device profiles")
async def list_profiles(
    session: SessionDep, principal: PrincipalDep, cursor: CursorQuery = None, limit: LimitQuery = 50
) -> Page[ProfileOut]:
    """The organization's profiles by name."""
    rows = await profiles.list_profiles(session, principal, cursor=cursor, limit=limit)
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].name, items[-1].id) if len(rows) > limit else None
    return Page(items=[ProfileOut.model_validate(p) for p in items], next_cursor=next_cursor)


@router.get("/device-profiles/{profile_id:uuid}", summary="Get a device profile")
async def get_profile(
    profile_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ProfileOut:
    """404 PROFILE_NOT_FOUND for another organization's."""
    profile = await profiles.get_profile(session, principal, profile_id)
    return ProfileOut.model_validate(profile)


@router.patch("/device-profiles/{profile_id:uuid}", summary="Change a device profile")
async def update_profile(
    profile_id: uuid.UUID, body: ProfilePatch, session: SessionDep, principal: PrincipalDep
) -> ProfileSaved:
    """Managers; only the fields sent change. provisioning_enabled false clears the credentials."""
    profile, secret = await profiles.update_profile(session, principal, profile_id, data=body)
    return ProfileSaved(**ProfileOut.model_validate(profile).model_dump(), provision_secret=secret)


@router.delete(
    "/device-profiles/{profile_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a device profile",
)
async def delete_profile(
    profile_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Managers; 409 PROFILE_IN_USE while live devices use it."""
    await profiles.delete_profile(session, principal, profile_id)


# -- devices -----------------------------------------------------------------------------


@router.get("/devices/me", summary="The calling device (device token)")
async def device_me(device: CurrentDevice) -> DeviceMe:
    """Authenticated by X-Device-Token or Authorization: Bearer <device token>."""
    return DeviceMe.model_validate(device)


@router.post("/devices", status_code=status.HTTP_201_CREATED, summary="Register a device")
async def create_device(
    body: DeviceIn, session: SessionDep, principal: PrincipalDep
) -> DeviceCreated:
    """Managers. The access_token is in this answer only."""
    device, token = await service.create_device(session, principal, data=body)
    return DeviceCreated(**DeviceOut.of(device).model_dump(), access_token=token)


@router.get("/devices", summary="List devices")
async def list_devices(
    session: SessionDep,
    principal: PrincipalDep,
    device_status: Annotated[Status | None, Query(alias="status")] = None,
    label: Annotated[
        list[Label], Query(max_length=MAX_LABELS, description="repeat; all must match")
    ] = [],  # noqa: B006 (FastAPI copies defaults)
    profile_id: uuid.UUID | None = None,
    asset_id: uuid.UUID | None = None,
    q: Annotated[SearchText | None, Query(description="in name or serial, any case")] = None,
    sort: Annotated[Sort, Query(description="a field; prefix - for descending")] = "name",
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[DeviceOut]:
    """Live devices of the organization, filtered, sorted, a page at a time."""
    filters = service.DeviceFilter(
        status=device_status, labels=tuple(label), profile_id=profile_id, asset_id=asset_id, q=q
    )
    rows, next_cursor = await service.list_devices(
        session, principal, filters=filters, sort=sort, cursor=cursor, limit=limit
    )
    return Page(items=[DeviceOut.of(d) for d in rows], next_cursor=next_cursor)


@router.post(
    "/devices/import",
    summary="Register devices from a CSV file",
    response_model_exclude_none=True,
    openapi_extra=_CSV_BODY,
)
@body_limit(MAX_CSV_BYTES + MULTIPART_OVERHEAD)
async def import_devices(
    session: SessionDep, principal: PrincipalDep, content: CsvUpload
) -> ImportResult:
    """Managers. Columns name,serial_number[,profile,labels,latitude,longitude]; labels split
    by ';', profile by name or id. Good rows are created, bad rows say why."""
    return await importing.import_devices(session, principal, content=content)


@router.get("/devices/{device_id:uuid}", summary="Get a device")
async def get_device(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DeviceOut:
    """404 DEVICE_NOT_FOUND for a deleted device or another organization's."""
    return DeviceOut.of(await service.get_device(session, principal, device_id))


@router.patch("/devices/{device_id:uuid}", summary="Change, disable or re-enable a device")
async def update_device(
    device_id: uuid.UUID, body: DevicePatch, session: SessionDep, principal: PrincipalDep
) -> DeviceOut:
    """Managers; only the fields sent change. status disabled refuses the device's token."""
    device = await service.update_device(session, principal, device_id, data=body)
    return DeviceOut.of(device)


@router.delete(
    "/devices/{device_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a device"
)
async def delete_device(device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> None:
    """Managers. The device vanishes, its token stops working, its serial may be reused."""
    await service.delete_device(session, principal, device_id)


@router.post("/devices/{device_id:uuid}/credentials/rotate", summary="Issue a new device token")
async def rotate_credentials(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DeviceToken:
    """Managers. The old token stops working at once; the new one is in this answer only."""
    device, token = await service.rotate_credentials(session, principal, device_id)
    return DeviceToken(device_id=device.id, access_token=token)


@router.post(
    "/provision",
    status_code=status.HTTP_201_CREATED,
    summary="Self-provision a device",
    responses={200: {"model": DeviceToken, "description": "re-provisioned: a new token"}},
)
async def provision(body: ProvisionIn, session: SessionDep, response: Response) -> DeviceToken:
    """Device-facing, no user: the profile's provision key and secret register a serial (201);
    a repeat answers 200 with a new token if the profile allows re-provisioning, else 409."""
    device, token, created = await provisioning.provision(session, data=body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return DeviceToken(device_id=device.id, access_token=token)
