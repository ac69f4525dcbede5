"""What the pages read besides the API's answers: a device's firmware and software (reported,
assigned, state) and its update history, and the names of a rollout's devices."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.attributes import service as attributes
from fleetcore.attributes.schemas import AttributeScope
from fleetcore.auth.principal import Principal, Role
from fleetcore.devices.models import Device
from fleetcore.ota.assignment import prefix
from fleetcore.ota.models import OtaPackage, OtaRollout, OtaRolloutDevice

KINDS = ("firmware", "software")
HISTORY_ROWS = 20


@dataclass(frozen=True, slots=True)
class Versions:
    """One kind on one device: what it reports running, what it is assigned, its state."""

    kind: str
    current_title: Any
    current_version: Any
    assigned_title: Any
    assigned_version: Any
    state: Any
    error: Any


@dataclass(frozen=True, slots=True)
class UpdateRow:
    """The device's part in one rollout."""

    rollout_id: uuid.UUID
    rollout_name: str
    rollout_status: str
    kind: str
    title: str
    version: str
    state: str
    error: str | None
    previous_version: str | None
    assigned_at: datetime | None
    updated_at: datetime


async def device_versions(session: AsyncSession, device: Device) -> list[Versions]:
    """Firmware and software of a device the caller has already loaded (its organization's):
    current_*_title/version and *_state reported, *_title/version assigned."""
    client = await attributes.device_values(session, device.id, AttributeScope.CLIENT)
    shared = await attributes.device_values(session, device.id, AttributeScope.SHARED)
    found = []
    for kind in KINDS:
        p = prefix(kind)
        found.append(
            Versions(
                kind=kind,
                current_title=client.get(f"current_{p}_title"),
                current_version=client.get(f"current_{p}_version"),
                assigned_title=shared.get(f"{p}_title"),
                assigned_version=shared.get(f"{p}_version"),
                state=client.get(f"{p}_state"),
                error=client.get(f"{p}_error"),
            )
        )
    return found


async def device_history(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, limit: int = HISTORY_ROWS
) -> list[UpdateRow]:
    """The device's rows in every rollout of the caller's organization, newest first (viewers)."""
    principal.require(Role.VIEWER)
    rows = await session.execute(
        select(OtaRolloutDevice, OtaRollout, OtaPackage)
        .join(OtaRollout, OtaRollout.id == OtaRolloutDevice.rollout_id)
        .join(OtaPackage, OtaPackage.id == OtaRollout.package_id)
        .where(
            OtaRolloutDevice.device_id == device_id,
            OtaRollout.organization_id == principal.org_id,
        )
        .order_by(OtaRollout.created_at.desc(), OtaRollout.id.desc())
        .limit(limit)
    )
    return [
        UpdateRow(
            rollout_id=rollout.id,
            rollout_name=rollout.name,
            rollout_status=rollout.status,
            kind=package.kind,
            title=package.title,
            version=package.version,
            state=row.state,
            error=row.error,
            previous_version=row.previous_version,
            assigned_at=row.assigned_at,
            updated_at=row.updated_at,
        )
        for row, rollout, package in rows.all()
    ]


async def device_names(
    session: AsyncSession, principal: Principal, device_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Names of the caller's organization's devices among `device_ids` (deleted ones too:
    a rollout's table still names them)."""
    principal.require(Role.VIEWER)
    if not device_ids:
        return {}
    rows = await session.execute(
        select(Device.id, Device.name).where(
            Device.id.in_(device_ids), Device.organization_id == principal.org_id
        )
    )
    return {device_id: name for device_id, name in rows.all()}
