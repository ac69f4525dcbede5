"""Devices: register, list, change, disable, soft-delete, rotate credentials."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets import relations
from fleetcore.assets.models import Asset
from fleetcore.assets.schemas import EntityType
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict, new_id, utcnow
from fleetcore.devices import credential_events, credentials
from fleetcore.devices.credential_events import CredentialAction
from fleetcore.devices.models import Device, DeviceLabel, DeviceProfile, DeviceStatus
from fleetcore.devices.schemas import DeviceIn, DevicePatch, Location
from fleetcore.errors import Conflict, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.plans import service as plans
from fleetcore.plans.limits import Limit

SORT_COLUMNS = {
    "name": Device.name,
    "serial_number": Device.serial_number,
    "created_at": Device.created_at,
    "updated_at": Device.updated_at,
}


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """What GET /api/v1/devices may filter on; every label given must be present."""

    status: str | None = None
    labels: tuple[str, ...] = ()
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    q: str | None = None


def live_devices(org_id: uuid.UUID) -> Select[Device]:
    """Devices of an organization that are not deleted."""
    return select(Device).where(Device.organization_id == org_id, Device.deleted_at.is_(None))


def serial_taken(serial_number: str) -> Conflict:
    """The error for a serial number a live device of the organization has."""
    return Conflict(
        f"a device with serial number {serial_number!r} exists",
        code="DEVICE_SERIAL_TAKEN",
        details={"field": "serial_number"},
    )


async def get_device(session: AsyncSession, principal: Principal, device_id: uuid.UUID) -> Device:
    """A live device of the caller's organization."""
    device = await session.scalar(live_devices(principal.org_id).where(Device.id == device_id))
    if device is None:
        raise NotFound("device not found", code="DEVICE_NOT_FOUND")
    return device


async def check_serial_free(
    session: AsyncSession,
    org_id: uuid.UUID,
    serial_number: str,
    *,
    exclude: uuid.UUID | None = None,
) -> None:
    """Conflict unless no other live device of the organization has this serial."""
    query = live_devices(org_id).where(Device.serial_number == serial_number)
    if exclude is not None:
        query = query.where(Device.id != exclude)
    if await session.scalar(query.with_only_columns(Device.id).limit(1)):
        raise serial_taken(serial_number)


async def check_references(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    profile_id: uuid.UUID | None,
    asset_id: uuid.UUID | None,
) -> None:
    """NotFound naming the field unless the profile and asset belong to the organization."""
    if profile_id is not None and not await session.scalar(
        select(DeviceProfile.id).where(
            DeviceProfile.id == profile_id, DeviceProfile.organization_id == org_id
        )
    ):
        raise NotFound(
            "device profile not found", code="PROFILE_NOT_FOUND", details={"field": "profile_id"}
        )
    if asset_id is not None and not await session.scalar(
        select(Asset.id).where(Asset.id == asset_id, Asset.organization_id == org_id)
    ):
        raise NotFound("asset not found", code="ASSET_NOT_FOUND", details={"field": "asset_id"})


def new_device(
    org_id: uuid.UUID,
    *,
    name: str,
    serial_number: str,
    profile_id: uuid.UUID | None = None,
    asset_id: uuid.UUID | None = None,
    labels: Iterable[str] = (),
    properties: dict[str, Any] | None = None,
    location: Location | None = None,
) -> tuple[Device, str]:
    """An unsaved device with its first credential, and that credential's token."""
    credential, token = credentials.new_credential()
    device = Device(
        id=new_id(),
        organization_id=org_id,
        name=name,
        serial_number=serial_number,
        profile_id=profile_id,
        asset_id=asset_id,
        status=DeviceStatus.PROVISIONED,
        properties=properties or {},
        label_rows=[DeviceLabel(label=label) for label in labels],
        credentials=[credential],
    )
    _set_location(device, location)
    return device, token


def _set_location(device: Device, location: Location | None) -> None:
    device.latitude = location.latitude if location else None
    device.longitude = location.longitude if location else None
    device.altitude = location.altitude if location else None


async def create_device(
    session: AsyncSession, principal: Principal, *, data: DeviceIn
) -> tuple[Device, str]:
    """Register a device (managers); returns it and its access token, shown once."""
    principal.require(Role.MANAGER)
    org_id = principal.org_id
    await check_references(session, org_id, profile_id=data.profile_id, asset_id=data.asset_id)
    await check_serial_free(session, org_id, data.serial_number)
    await plans.admit(session, org_id, Limit.DEVICES)  # 403 PLAN_LIMIT when over the plan
    device, token = new_device(
        org_id, **data.model_dump(exclude={"location"}), location=data.location
    )
    session.add(device)
    await flush_or_conflict(session, serial_taken(data.serial_number))
    audit.record(
        session,
        action="device.create",
        actor=principal,
        organization_id=org_id,
        target_type="device",
        target_id=device.id,
        details={"serial_number": device.serial_number, "name": device.name},
    )
    await credential_events.publish(session, credential_events.upsert(org_id, device.id, token))
    await session.commit()
    return device, token


async def list_devices(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: DeviceFilter,
    sort: str,
    cursor: str | None,
    limit: int,
) -> tuple[list[Device], str | None]:
    """One page of the organization's live devices and the cursor of the next."""
    query = live_devices(principal.org_id)
    if filters.status is not None:
        query = query.where(Device.status == filters.status)
    for label in filters.labels:
        query = query.where(
            exists().where(DeviceLabel.device_id == Device.id, DeviceLabel.label == label)
        )
    if filters.profile_id is not None:
        query = query.where(Device.profile_id == filters.profile_id)
    if filters.asset_id is not None:
        query = query.where(Device.asset_id == filters.asset_id)
    if filters.q:
        pattern = "%" + _escape_like(filters.q) + "%"
        query = query.where(
            or_(
                Device.name.ilike(pattern, escape="\\"),
                Device.serial_number.ilike(pattern, escape="\\"),
            )
        )
    key = sort.removeprefix("-")
    query = paginate(
        query,
        sort=SORT_COLUMNS[key],
        id_column=Device.id,
        cursor=cursor,
        limit=limit,
        descending=sort.startswith("-"),
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr=key)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def update_device(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, data: DevicePatch
) -> Device:
    """Change the fields sent (managers); status disabled refuses the device's token."""
    principal.require(Role.MANAGER)
    device = await get_device(session, principal, device_id)
    sent = data.model_fields_set
    await check_references(
        session,
        device.organization_id,
        profile_id=data.profile_id if "profile_id" in sent else None,
        asset_id=data.asset_id if "asset_id" in sent else None,
    )
    if data.serial_number is not None and data.serial_number != device.serial_number:
        await check_serial_free(
            session, device.organization_id, data.serial_number, exclude=device.id
        )
    changed: dict[str, Any] = {}
    for name in ("name", "serial_number", "profile_id", "asset_id", "properties"):
        if name in sent and getattr(data, name) != getattr(device, name):
            setattr(device, name, getattr(data, name))
            changed[name] = True
    if data.labels is not None and set(data.labels) != set(device.labels):
        wanted = data.labels
        keep = [row for row in device.label_rows if row.label in wanted]
        have = {row.label for row in keep}
        device.label_rows = keep + [DeviceLabel(label=x) for x in wanted if x not in have]
        changed["labels"] = True
    if "location" in sent:
        _set_location(device, data.location)
        changed["location"] = True
    credential_change: CredentialAction | None = None
    if data.status is not None:
        status = _next_status(device, data.status)
        if status != device.status:
            changed["status"] = [device.status, status]
            if DeviceStatus.DISABLED in (device.status, status):
                credential_change = (
                    CredentialAction.DISABLE
                    if status == DeviceStatus.DISABLED
                    else CredentialAction.ENABLE
                )
            device.status = status
    if changed:
        details: dict[str, Any] = {"fields": sorted(changed)}
        if "status" in changed:
            details["status"] = changed["status"]
        device.updated_at = utcnow()
        await flush_or_conflict(session, serial_taken(device.serial_number))
        audit.record(
            session,
            action="device.update",
            actor=principal,
            organization_id=device.organization_id,
            target_type="device",
            target_id=device.id,
            details=details,
        )
        if credential_change is not None:
            await credential_events.publish(
                session,
                credential_events.change(device.organization_id, device.id, credential_change),
            )
        await session.commit()
    return device


def _next_status(device: Device, wanted: str) -> str:
    """Disable, or re-enable as active if the device ever authenticated, else provisioned."""
    if wanted == DeviceStatus.DISABLED:
        return DeviceStatus.DISABLED
    if device.status != DeviceStatus.DISABLED:
        return device.status  # already enabled; activity, not the caller, sets active
    return DeviceStatus.ACTIVE if device.last_seen_at is not None else DeviceStatus.PROVISIONED


async def delete_device(session: AsyncSession, principal: Principal, device_id: uuid.UUID) -> None:
    """Soft-delete (managers): the device vanishes, its token stops working, its serial frees."""
    principal.require(Role.MANAGER)
    device = await get_device(session, principal, device_id)
    device.deleted_at = utcnow()
    await credentials.revoke_all(session, device.id)
    await relations.delete_for_entity(
        session,
        organization_id=device.organization_id,
        entity_type=EntityType.DEVICE,
        entity_id=device.id,
    )
    audit.record(
        session,
        action="device.delete",
        actor=principal,
        organization_id=device.organization_id,
        target_type="device",
        target_id=device.id,
        details={"serial_number": device.serial_number},
    )
    await credential_events.publish(
        session,
        credential_events.change(device.organization_id, device.id, CredentialAction.DELETE),
    )
    await session.commit()


async def rotate_credentials(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID
) -> tuple[Device, str]:
    """A new token for the device; the old one stops working now (managers)."""
    principal.require(Role.MANAGER)
    device = await get_device(session, principal, device_id)
    token = await credentials.replace_token(session, device)
    audit.record(
        session,
        action="device.credentials.rotate",
        actor=principal,
        organization_id=device.organization_id,
        target_type="device",
        target_id=device.id,
    )
    await credential_events.publish(
        session, credential_events.upsert(device.organization_id, device.id, token)
    )
    await session.commit()
    return device, token
