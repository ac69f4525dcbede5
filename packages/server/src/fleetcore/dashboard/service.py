"""Figures the dashboard shows, computed for the caller's organization."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets.models import Asset
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.devices.service import live_devices
from fleetcore.events import service as events
from fleetcore.events.models import DeviceEvent
from fleetcore.telemetry.models import ROLLUP_1M, Series

RATE_WINDOW_MS = 5 * 60_000  # the ingest rate is an average over the last five minutes


@dataclass(frozen=True, slots=True)
class Counts:
    """How many of each registry object the organization has."""

    devices: int
    profiles: int
    assets: int


@dataclass(frozen=True, slots=True)
class Overview:
    """The fleet at a glance: presence, ingest rate, newest events."""

    counts: Counts
    connectivity: dict[str, int]  # online | offline | never -> devices
    readings_per_min: float
    recent_events: list[tuple[DeviceEvent, str]] = field(default_factory=list)


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


async def connectivity(session: AsyncSession, principal: Principal) -> dict[str, int]:
    """Live devices by presence: online, offline, never seen."""
    query = (
        live_devices(principal.org_id)
        .with_only_columns(Device.connectivity, func.count())
        .group_by(Device.connectivity)
    )
    found = {"online": 0, "offline": 0, "never": 0}
    for state, count in (await session.execute(query)).all():
        found[state] = count
    return found


async def readings_per_min(session: AsyncSession, principal: Principal, *, now_ms: int) -> float:
    """Readings stored per minute over the last five minutes (from the 1-minute roll-ups)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(ROLLUP_1M.c.cnt), 0))
        .select_from(ROLLUP_1M)
        .join(Series, Series.id == ROLLUP_1M.c.series_id)
        .where(
            Series.organization_id == principal.org_id,
            ROLLUP_1M.c.bucket >= now_ms - RATE_WINDOW_MS,
        )
    )
    return round(int(total or 0) / (RATE_WINDOW_MS / 60_000), 1)


async def overview(session: AsyncSession, principal: Principal) -> Overview:
    """Everything the /dashboard page shows."""
    return Overview(
        counts=await counts(session, principal),
        connectivity=await connectivity(session, principal),
        readings_per_min=await readings_per_min(session, principal, now_ms=int(time.time() * 1000)),
        recent_events=await events.recent_events(session, principal, limit=10),
    )
