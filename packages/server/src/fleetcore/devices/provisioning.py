"""Self-provisioning: a device registers itself with its profile's key and secret."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.security import same, token_hash
from fleetcore.db import flush_or_conflict
from fleetcore.devices import credential_events, credentials
from fleetcore.devices.models import Device, DeviceProfile, DeviceStatus
from fleetcore.devices.schemas import ProvisionIn
from fleetcore.devices.service import live_devices, new_device, serial_taken
from fleetcore.errors import Conflict, Unauthorized
from fleetcore.plans import service as plans
from fleetcore.plans.limits import Limit

# Compared against when the key is unknown, so the answer takes as long either way.
_NO_SECRET_HASH = token_hash("")


async def provision(session: AsyncSession, *, data: ProvisionIn) -> tuple[Device, str, bool]:
    """Create (or, if the profile allows, re-key) the device of a serial number.

    Returns the device, its new token and whether it was created.
    """
    profile = await session.scalar(
        select(DeviceProfile).where(DeviceProfile.provision_key == data.provision_key)
    )
    expected = (profile.provision_secret_hash if profile else None) or _NO_SECRET_HASH
    if not same(token_hash(data.provision_secret), expected) or profile is None:
        if profile is not None:  # the key is right: worth a record for the organization
            audit.record(
                session,
                action="device.provision",
                actor=None,
                actor_type="device",
                organization_id=profile.organization_id,
                target_type="device_profile",
                target_id=profile.id,
                outcome="failure",
                details={"serial_number": data.serial_number, "reason": "wrong secret"},
            )
            await session.commit()
        raise Unauthorized(
            "the provision key or secret is not valid", code="INVALID_PROVISION_CREDENTIALS"
        )
    device = await session.scalar(
        live_devices(profile.organization_id).where(Device.serial_number == data.serial_number)
    )
    created = device is None
    if device is None:
        await plans.admit(session, profile.organization_id, Limit.DEVICES)
        device, token = new_device(
            profile.organization_id,
            name=data.name or data.serial_number,
            serial_number=data.serial_number,
            profile_id=profile.id,
        )
        session.add(device)
        await flush_or_conflict(session, serial_taken(data.serial_number))
    else:
        if not profile.allow_reprovision or device.profile_id != profile.id:
            raise Conflict(
                "a device with this serial number is already provisioned",
                code="DEVICE_ALREADY_PROVISIONED",
                details={"field": "serial_number"},
            )
        if device.status == DeviceStatus.DISABLED:
            raise Conflict("the device is disabled", code="DEVICE_DISABLED")
        token = await credentials.replace_token(session, device)
    audit.record(
        session,
        action="device.provision",
        actor=None,
        actor_type="device",
        actor_id=str(device.id),
        organization_id=device.organization_id,
        target_type="device",
        target_id=device.id,
        details={
            "serial_number": device.serial_number,
            "profile_id": str(profile.id),
            "reprovision": not created,
        },
    )
    await credential_events.publish(
        session, credential_events.upsert(device.organization_id, device.id, token)
    )
    await session.commit()
    return device, token, created
