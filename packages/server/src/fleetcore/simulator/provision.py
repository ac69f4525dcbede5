"""Devices sim-0001… of an organization, made or reused through the database.

Like `fleetcore export|import`, this acts with the database's rights (the settings `fleetcore
serve` uses), not a user's. Device tokens are stored hashed, so a reused device gets a fresh
token (its previous simulator token is revoked) that lives only in this process's memory.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth import users
from fleetcore.auth.models import Organization
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.devices import credentials
from fleetcore.devices import service as devices
from fleetcore.devices.models import (
    DEFAULT_MQTT_BURST,
    DEFAULT_MQTT_RATE_PER_S,
    Device,
    DeviceProfile,
    DeviceStatus,
)
from fleetcore.errors import Invalid
from fleetcore.simulator.signals import DeviceKind, kind_of, profile_keys

NAME_PREFIX = "sim-"
LABEL = "simulated"
MAX_RATE_PER_S = 10_000.0  # the profile schema's ceiling


def device_name(index: int) -> str:
    """The name and serial number of the fleet's device number `index` (1-based)."""
    return f"{NAME_PREFIX}{index:04d}"


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A provisioned simulated device and its token (kept in memory only)."""

    index: int
    id: uuid.UUID
    name: str
    kind: DeviceKind
    token: str


@dataclass(frozen=True, slots=True)
class Fleet:
    """What provisioning made: the devices, counts, and what the operator should know."""

    organization_id: uuid.UUID
    profile_id: uuid.UUID
    devices: list[SimDevice]
    created: int
    reused: int
    warnings: list[str]


async def ensure_organization(session: AsyncSession, slug: str) -> Organization:
    """The organization with this slug, created (named after it) if absent."""
    org = await users.get_organization_by_slug(session, slug)
    if org is None:
        data = OrganizationIn(name=slug.replace("-", " ").title(), slug=slug)
        org = await users.create_organization(session, None, data=data)
    return org


async def ensure_profile(
    session: AsyncSession, organization_id: uuid.UUID, name: str, **fields: Any
) -> tuple[DeviceProfile, bool]:
    """The organization's device profile with this name, made with `fields` if absent, and
    whether it was made. An existing one is left as it is: its users may have edited it."""
    found = await session.scalar(
        select(DeviceProfile).where(
            DeviceProfile.organization_id == organization_id, DeviceProfile.name == name
        )
    )
    if found is not None:
        return found, False
    made = DeviceProfile(organization_id=organization_id, name=name, **fields)
    session.add(made)
    await session.flush()
    return made, True


@dataclass(frozen=True, slots=True)
class Provisioned:
    """A device of a simulated fleet, found by serial number or made, with a fresh token."""

    device: Device
    token: str
    created: bool


async def ensure_devices(
    session: AsyncSession,
    organization_id: uuid.UUID,
    serials: Sequence[str],
    *,
    profile_id: uuid.UUID,
    label: str,
    properties: Callable[[int], dict[str, object]],
    names: Sequence[str] = (),
) -> list[Provisioned]:
    """The organization's live devices with these serial numbers (in order), each made if
    absent (named from `names` in order, else after its serial; `properties(index)`, 1-based)
    or given a fresh token, the previous one revoked."""
    existing = {
        d.serial_number: d
        for d in await session.scalars(
            devices.live_devices(organization_id).where(Device.serial_number.in_(serials))
        )
    }
    out = []
    for index, serial in enumerate(serials, start=1):
        device = existing.get(serial)
        if device is None:
            device, token = devices.new_device(
                organization_id,
                name=names[index - 1] if index <= len(names) else serial,
                serial_number=serial,
                profile_id=profile_id,
                labels=[label],
                properties=properties(index),
            )
            session.add(device)
            out.append(Provisioned(device, token, created=True))
        else:
            token = await credentials.replace_token(session, device)
            out.append(Provisioned(device, token, created=False))
    await session.flush()
    return out


def record_provisioning(
    session: AsyncSession,
    made: Sequence[Provisioned],
    *,
    action: str,
    organization_id: uuid.UUID,
    target_type: str,
    target_id: uuid.UUID,
    **details: object,
) -> tuple[int, int]:
    """Audit a provisioning run (the CLI's, no user) and say how many devices it made and
    reused; the entry commits with the devices."""
    created = sum(one.created for one in made)
    reused = len(made) - created
    audit.record(
        session,
        action=action,
        actor=None,
        actor_type="cli",
        organization_id=organization_id,
        target_type=target_type,
        target_id=target_id,
        details={"created": created, "reused": reused, **details},
    )
    return created, reused


async def provision(
    database: Database,
    *,
    organization: str,
    count: int,
    profile: str,
    messages_per_s: float = 1.0,
) -> Fleet:
    """Create or reuse `count` devices (and the organization and profile, if absent).

    `messages_per_s` is what each device will send: a profile this creates allows four
    times that over MQTT; an existing profile that allows less is named in the warnings.
    """
    warnings: list[str] = []
    async with database.session(write=True) as session:
        org = await ensure_organization(session, organization)
        rate = min(MAX_RATE_PER_S, max(DEFAULT_MQTT_RATE_PER_S, 4 * messages_per_s))
        found, made_profile = await ensure_profile(
            session,
            org.id,
            profile,
            description="Simulated devices (fleetcore simulate)",
            telemetry_keys=profile_keys(),
            mqtt_rate_per_s=rate,
            mqtt_burst=max(DEFAULT_MQTT_BURST, int(rate * 4)),
        )
        if not made_profile:
            warnings.extend(_profile_problems(found, messages_per_s))
        made = await ensure_devices(
            session,
            org.id,
            [device_name(i) for i in range(1, count + 1)],
            profile_id=found.id,
            label=LABEL,
            properties=lambda index: {"simulated": kind_of(index).value},
        )
        fleet = []
        for index, one in enumerate(made, start=1):
            if one.device.status == DeviceStatus.DISABLED:
                warnings.append(f"{one.device.name} is disabled: the platform refuses its readings")
            fleet.append(
                SimDevice(index, one.device.id, one.device.name, kind_of(index), one.token)
            )
        created, reused = record_provisioning(
            session,
            made,
            action="simulator.provision",
            organization_id=org.id,
            target_type="device_profile",
            target_id=found.id,
        )
        await session.commit()
        return Fleet(org.id, found.id, fleet, created, reused, warnings)


def _profile_problems(profile: DeviceProfile, messages_per_s: float) -> list[str]:
    """Why an existing profile would refuse some of the simulator's readings."""
    problems = []
    declared = {k["key"]: k for k in profile.telemetry_keys}
    if declared:  # a profile without keys accepts any key
        missing = []
        for wanted in profile_keys():
            key = declared.get(str(wanted["key"]))
            if key is None or key.get("type", "number") != "number":
                missing.append(repr(wanted["key"]))
                continue
            low, high = key.get("min"), key.get("max")
            if (low is not None and low > wanted["min"]) or (
                high is not None and high < wanted["max"]
            ):
                problems.append(
                    f"profile {profile.name!r} allows {wanted['key']} within [{low}, {high}], "
                    f"the simulator sends [{wanted['min']}, {wanted['max']}]: some are refused"
                )
        if missing:
            raise Invalid(
                f"profile {profile.name!r} does not declare the number keys {', '.join(missing)}; "
                "choose another --profile (it is created with the simulator's keys)",
                code="PROFILE_UNSUITABLE",
            )
    if profile.mqtt_rate_per_s < messages_per_s:
        problems.append(
            f"profile {profile.name!r} allows {profile.mqtt_rate_per_s:g} MQTT messages/s per "
            f"device, the simulator sends {messages_per_s:.3g}: the rest become dead letters"
        )
    return problems
