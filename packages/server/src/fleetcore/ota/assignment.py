"""Assigning a package to a device: the ThingsBoard shared attributes (desired state) and
what the device had before, so a rollback can put it back.

The attributes service writes them, so they reach the device as any desired state does
(MQTT attribute updates, the config topic, HTTP long-polls).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.attributes import service as attributes
from fleetcore.attributes.schemas import AttributeScope
from fleetcore.auth.principal import Principal
from fleetcore.db import utcnow
from fleetcore.devices.models import Device
from fleetcore.ota.models import DeviceState, OtaPackage, OtaRolloutDevice

SUFFIXES = (
    "title",
    "version",
    "size",
    "checksum",
    "checksum_algorithm",
    "signature",
    "signature_alg",
)


def prefix(kind: str) -> str:
    """ThingsBoard's attribute prefix: fw for firmware, sw for software."""
    return "fw" if kind == "firmware" else "sw"


def shared_values(package: OtaPackage) -> dict[str, Any]:
    """The shared attributes that assign `package` (None deletes a signature key)."""
    p = prefix(package.kind)
    return {
        f"{p}_title": package.title,
        f"{p}_version": package.version,
        f"{p}_size": package.size,
        f"{p}_checksum": package.sha256,
        f"{p}_checksum_algorithm": "SHA256",
        f"{p}_signature": package.signature,
        f"{p}_signature_alg": "ed25519" if package.signature else None,
    }


def state_keys(kind: str) -> set[str]:
    """The client keys a device reports its update with."""
    p = prefix(kind)
    return {f"{p}_state", f"{p}_error", f"current_{p}_title", f"current_{p}_version"}


async def assign(
    session: AsyncSession,
    row: OtaRolloutDevice,
    package: OtaPackage,
    *,
    actor: Principal | None,
) -> bool:
    """Queue one pending device: record what it had, write the package's attributes.

    The row moves pending -> queued by one conditional UPDATE; a device another run queued
    first is left alone (False). The caller commits.
    """
    device = await session.get(Device, row.device_id)
    if device is None or device.deleted_at is not None:
        return False
    p = prefix(package.kind)
    shared = await attributes.device_values(
        session, device.id, AttributeScope.SHARED, {f"{p}_{suffix}" for suffix in SUFFIXES}
    )
    client = await attributes.device_values(
        session, device.id, AttributeScope.CLIENT, {f"current_{p}_title", f"current_{p}_version"}
    )
    baseline = await attributes.client_version(session, device.id)
    moved = await session.execute(
        update(OtaRolloutDevice)
        .where(
            OtaRolloutDevice.rollout_id == row.rollout_id,
            OtaRolloutDevice.device_id == row.device_id,
            OtaRolloutDevice.state == DeviceState.PENDING,
        )
        .values(
            state=DeviceState.QUEUED,
            baseline=baseline,
            previous=shared,
            previous_title=_text(client.get(f"current_{p}_title"), 128),
            previous_version=_text(client.get(f"current_{p}_version"), 64),
            assigned_at=utcnow(),
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if int(moved.rowcount or 0) != 1:  # type: ignore[attr-defined]
        return False
    await attributes.apply_shared(
        session, device, shared_values(package), actor=actor, action="ota.assign"
    )
    return True


async def restore(
    session: AsyncSession,
    row: OtaRolloutDevice,
    kind: str,
    *,
    actor: Principal | None,
) -> None:
    """Put back what the device had: the package of the version it reported before, if
    the organization has it, else the shared keys as they were. The caller commits."""
    device = await session.get(Device, row.device_id)
    if device is None or device.deleted_at is not None:
        return
    p = prefix(kind)
    values: dict[str, Any] = {f"{p}_{suffix}": None for suffix in SUFFIXES}
    earlier = None
    if row.previous_title and row.previous_version:
        earlier = await session.scalar(
            select(OtaPackage).where(
                OtaPackage.organization_id == device.organization_id,
                OtaPackage.kind == kind,
                OtaPackage.title == row.previous_title,
                OtaPackage.version == row.previous_version,
            )
        )
    if earlier is not None:
        values.update(shared_values(earlier))
    else:
        values.update(row.previous or {})
    await attributes.apply_shared(session, device, values, actor=actor, action="ota.rollback")


def _text(value: object, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


async def assigned_package(
    session: AsyncSession, device_id: uuid.UUID, organization_id: uuid.UUID, kind: str
) -> OtaPackage | None:
    """The package the device's shared attributes assign now (of its organization)."""
    p = prefix(kind)
    shared = await attributes.device_values(
        session, device_id, AttributeScope.SHARED, {f"{p}_title", f"{p}_version"}
    )
    title, version = shared.get(f"{p}_title"), shared.get(f"{p}_version")
    if not isinstance(title, str) or not isinstance(version, str):
        return None
    package: OtaPackage | None = await session.scalar(
        select(OtaPackage).where(
            OtaPackage.organization_id == organization_id,
            OtaPackage.kind == kind,
            OtaPackage.title == title,
            OtaPackage.version == version,
        )
    )
    return package
