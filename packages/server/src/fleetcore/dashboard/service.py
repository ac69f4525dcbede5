"""Figures the dashboard shows, computed for the caller's organization."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets.models import Asset
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device, DeviceProfile


@dataclass(frozen=True, slots=True)
class Counts:
    """How many of each registry object the organization has."""

    devices: int
    profiles: int
    assets: int


async def counts(session: AsyncSession, principal: Principal) -> Counts:
    """Live devices, profiles and assets of the caller's organization."""
    if principal.organization_id is None:
        return Counts(0, 0, 0)
    org = principal.organization_id
    devices = await session.scalar(
        select(func.count()).where(Device.organization_id == org, Device.deleted_at.is_(None))
    )
    profiles = await session.scalar(
        select(func.count()).where(DeviceProfile.organization_id == org)
    )
    assets = await session.scalar(select(func.count()).where(Asset.organization_id == org))
    return Counts(devices or 0, profiles or 0, assets or 0)
