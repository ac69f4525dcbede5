"""Device profiles: what a kind of device reports, may be told, and how it provisions itself."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.analytics.config import AnalyticsConfig
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.auth.security import new_token, token_hash
from fleetcore.commands.limits import check_schemas
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.devices.profile_schemas import ProfileIn, ProfilePatch
from fleetcore.errors import Conflict, NotFound
from fleetcore.pagination import paginate
from fleetcore.safety.policy import SafetyPolicy

PROVISION_KEY_PREFIX = "fcp_"
PROVISION_SECRET_PREFIX = "fcps_"  # noqa: S105 (a prefix, not a secret)

# Fields a PATCH copies as they are.
_PLAIN_FIELDS = (
    "name",
    "description",
    "out_of_range",
    "offline_timeout_s",
    "mqtt_rate_per_s",
    "mqtt_burst",
    "max_payload_bytes",
    "media_max_bytes",
    "allow_reprovision",
)


def _analytics(config: AnalyticsConfig) -> dict[str, Any]:
    """What DeviceProfile.analytics holds: every setting, defaults included."""
    return config.model_dump(mode="json", exclude_defaults=False)


def _policy(policy: SafetyPolicy | None) -> dict[str, Any] | None:
    """What DeviceProfile.safety_policy holds (None: no gate beyond command_limits)."""
    return None if policy is None else policy.model_dump(mode="json")


async def get_profile(
    session: AsyncSession, principal: Principal, profile_id: uuid.UUID
) -> DeviceProfile:
    """One profile of the caller's organization."""
    profile = await session.scalar(
        select(DeviceProfile).where(
            DeviceProfile.id == profile_id, DeviceProfile.organization_id == principal.org_id
        )
    )
    if profile is None:
        raise NotFound("device profile not found", code="PROFILE_NOT_FOUND")
    return profile


async def list_profiles(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> list[DeviceProfile]:
    """Profiles of the caller's organization by name (one extra row tells if more follow)."""
    query = select(DeviceProfile).where(DeviceProfile.organization_id == principal.org_id)
    query = paginate(
        query, sort=DeviceProfile.name, id_column=DeviceProfile.id, cursor=cursor, limit=limit
    )
    return list((await session.scalars(query)).all())


async def _check_unique(
    session: AsyncSession,
    org_id: uuid.UUID,
    *,
    name: str | None,
    exclude: uuid.UUID | None = None,
) -> None:
    others = DeviceProfile.id != exclude if exclude is not None else true()
    if name is not None and await session.scalar(
        select(DeviceProfile.id).where(
            DeviceProfile.organization_id == org_id, DeviceProfile.name == name, others
        )
    ):
        raise Conflict(
            f"a device profile named {name!r} exists",
            code="PROFILE_NAME_TAKEN",
            details={"field": "name"},
        )


async def _flush(session: AsyncSession) -> None:
    # A concurrent request took the name or key since the check.
    await flush_or_conflict(
        session,
        Conflict("the profile name was just taken", code="PROFILE_CONFLICT"),
    )


def _enable_provisioning(profile: DeviceProfile, *, secret: str | None) -> str | None:
    """Issue a key unless the profile has one, and set the secret (generated when not given);
    returns a generated secret.

    Keys are issued by the server, never chosen: they are unique across the platform (a
    device presents its key without its organization), so a chosen key could only be refused
    as taken, which would tell one organization another's key.
    """
    generated = None
    if profile.provision_key is None:
        profile.provision_key = new_token(PROVISION_KEY_PREFIX, 24)
    if secret is None and profile.provision_secret_hash is None:
        secret = generated = new_token(PROVISION_SECRET_PREFIX)
    if secret is not None:
        profile.provision_secret_hash = token_hash(secret)
    return generated


async def create_profile(
    session: AsyncSession, principal: Principal, *, data: ProfileIn
) -> tuple[DeviceProfile, str | None]:
    """A new profile (managers); returns it and a generated provisioning secret, if any."""
    principal.require(Role.MANAGER)
    await check_schemas(data.command_limits.allowed)
    await _check_unique(session, principal.org_id, name=data.name)
    profile = DeviceProfile(
        organization_id=principal.org_id,
        name=data.name,
        description=data.description,
        telemetry_keys=[k.model_dump(exclude_none=True) for k in data.telemetry_keys],
        out_of_range=data.out_of_range,
        command_limits=data.command_limits.stored(),
        offline_timeout_s=data.offline_timeout_s,
        mqtt_rate_per_s=data.mqtt_rate_per_s,
        mqtt_burst=data.mqtt_burst,
        max_payload_bytes=data.max_payload_bytes,
        media_max_bytes=data.media_max_bytes,
        allow_reprovision=data.allow_reprovision,
        analytics=_analytics(data.analytics),
        safety_policy=_policy(data.safety_policy),
    )
    generated = None
    if data.provisioning_enabled:
        generated = _enable_provisioning(profile, secret=data.provision_secret)
    session.add(profile)
    await _flush(session)
    audit.record(
        session,
        action="profile.create",
        actor=principal,
        organization_id=profile.organization_id,
        target_type="device_profile",
        target_id=profile.id,
        details={"name": profile.name, "provisioning": profile.provision_key is not None},
    )
    await session.commit()
    return profile, generated


async def update_profile(
    session: AsyncSession, principal: Principal, profile_id: uuid.UUID, *, data: ProfilePatch
) -> tuple[DeviceProfile, str | None]:
    """Change the fields sent (managers); returns the profile and a generated secret, if any."""
    principal.require(Role.MANAGER)
    if data.command_limits is not None:
        await check_schemas(data.command_limits.allowed)
    profile = await get_profile(session, principal, profile_id)
    sent = data.model_fields_set
    await _check_unique(
        session,
        principal.org_id,
        name=data.name if data.name != profile.name else None,
        exclude=profile.id,
    )
    changed = [
        name
        for name in _PLAIN_FIELDS
        if name in sent and getattr(data, name) != getattr(profile, name)
    ]
    for name in changed:
        setattr(profile, name, getattr(data, name))
    if data.telemetry_keys is not None:
        profile.telemetry_keys = [k.model_dump(exclude_none=True) for k in data.telemetry_keys]
        changed.append("telemetry_keys")
    if data.command_limits is not None:
        profile.command_limits = data.command_limits.stored()
        changed.append("command_limits")
    if data.analytics is not None and _analytics(data.analytics) != profile.analytics:
        profile.analytics = _analytics(data.analytics)
        changed.append("analytics")
    if "safety_policy" in sent and _policy(data.safety_policy) != profile.safety_policy:
        profile.safety_policy = _policy(data.safety_policy)
        changed.append("safety_policy")
    generated = None
    if data.provisioning_enabled is False:
        profile.provision_key = profile.provision_secret_hash = None
        changed.append("provisioning")
    elif data.provisioning_enabled or data.provision_secret:
        generated = _enable_provisioning(profile, secret=data.provision_secret)
        changed.append("provisioning")
    if changed:
        profile.updated_at = utcnow()
        await _flush(session)
        audit.record(
            session,
            action="profile.update",
            actor=principal,
            organization_id=profile.organization_id,
            target_type="device_profile",
            target_id=profile.id,
            details={"fields": sorted(set(changed))},  # names only: never a secret
        )
        await session.commit()
    return profile, generated


async def delete_profile(
    session: AsyncSession, principal: Principal, profile_id: uuid.UUID
) -> None:
    """Delete a profile no live device uses (managers); 409 PROFILE_IN_USE otherwise."""
    principal.require(Role.MANAGER)
    profile = await get_profile(session, principal, profile_id)
    in_use = await session.scalar(
        select(func.count())
        .select_from(Device)
        .where(Device.profile_id == profile.id, Device.deleted_at.is_(None))
    )
    if in_use:
        raise Conflict(
            f"{in_use} device(s) use this profile; move or delete them first",
            code="PROFILE_IN_USE",
            details={"devices": in_use},
        )
    # Deleted devices keep their rows but let go of the profile.
    await session.execute(
        update(Device)
        .where(Device.profile_id == profile.id, Device.deleted_at.is_not(None))
        .values(profile_id=None)
    )
    await session.delete(profile)
    try:
        await session.flush()
    except IntegrityError:  # a device was given the profile since the check
        await session.rollback()
        raise Conflict("devices use this profile", code="PROFILE_IN_USE") from None
    audit.record(
        session,
        action="profile.delete",
        actor=principal,
        organization_id=principal.org_id,
        target_type="device_profile",
        target_id=profile_id,
        details={"name": profile.name},
    )
    await session.commit()
