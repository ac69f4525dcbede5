"""The read side of analytics: the fleet's health ranking, findings, and one device's health,
wear and recent findings, always within the caller's organization.

Pure SQLAlchemy on the analytics tables; the HTTP layer is fleetcore.advisory. Stored JSON
(contributors, wear) is written by the engine; it is read leniently here, so a field the
engine adds or drops later shows as missing rather than failing the page.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.analytics import config as analytics_config
from fleetcore.analytics.models import AnalyticsFinding, DeviceHealth
from fleetcore.auth.principal import Principal, Role
from fleetcore.devices import service as devices
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.errors import Invalid, NotFound
from fleetcore.pagination import encode_cursor, paginate

TOP_CONTRIBUTORS = 3
RECENT_FINDINGS = 20


@dataclass(frozen=True, slots=True)
class RankedDevice:
    """One device in the fleet ranking: its health and what lowers it most."""

    device_id: uuid.UUID
    name: str
    score: float
    score_day_ago: float
    trend: str
    top_contributors: list[dict[str, Any]]
    open_findings: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class FindingFilter:
    """What GET /api/v1/analytics/findings filters on; times are epoch ms, [since, until)."""

    device_id: uuid.UUID | None = None
    key: str | None = None
    method: str | None = None
    severity: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FindingView:
    """A finding with the name of its device."""

    finding: AnalyticsFinding
    device_name: str


@dataclass(frozen=True, slots=True)
class WearView:
    """One wear key's remaining-useful-life estimate as the engine stored it, with the
    profile's settings that say how to read it (min_points for "not enough data")."""

    key: str
    status: str
    now_ms: int | None
    eta_ms: int | None
    low_ms: int | None
    high_ms: int | None
    level: float | None
    model: str | None
    points: int
    min_points: int
    current: float | None
    threshold: float | None
    direction: str


@dataclass(frozen=True, slots=True)
class DeviceAnalytics:
    """A device's analytics: whether its profile watches anything, health, wear, findings."""

    device_id: uuid.UUID
    name: str
    configured: bool
    health: DeviceHealth | None
    wear: list[WearView]
    findings: list[FindingView]


async def fleet_health(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[RankedDevice], str | None]:
    """Devices with a health score, worst first (ties by device id)."""
    principal.require(Role.VIEWER)
    query = cast(
        Select[Any],
        select(DeviceHealth, Device.name)
        .join(Device, Device.id == DeviceHealth.device_id)
        .where(
            DeviceHealth.organization_id == principal.org_id,
            Device.organization_id == principal.org_id,
            Device.deleted_at.is_(None),
        ),
    )
    query = paginate(
        query, sort=DeviceHealth.score, id_column=DeviceHealth.device_id, cursor=cursor, limit=limit
    )
    rows = (await session.execute(query)).all()
    items = [
        RankedDevice(
            device_id=health.device_id,
            name=name,
            score=health.score,
            score_day_ago=health.score_day_ago,
            trend=health.trend,
            top_contributors=_contributors(health.contributors)[:TOP_CONTRIBUTORS],
            open_findings=health.open_findings,
            updated_at=health.updated_at,
        )
        for health, name in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit and items:
        next_cursor = encode_cursor(items[-1].score, items[-1].device_id)
    return items, next_cursor


def _contributors(stored: Any) -> list[dict[str, Any]]:
    """The stored contributors that are objects, largest penalty first."""
    items = [c for c in stored if isinstance(c, dict)] if isinstance(stored, list) else []
    return sorted(items, key=lambda c: -_number(c.get("penalty"), 0.0))


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _findings_query(principal: Principal) -> Select[Any]:
    return cast(
        Select[Any],
        select(AnalyticsFinding, Device.name)
        .join(Device, Device.id == AnalyticsFinding.device_id)
        .where(
            AnalyticsFinding.organization_id == principal.org_id,
            Device.organization_id == principal.org_id,
            Device.deleted_at.is_(None),
        ),
    )


async def list_findings(
    session: AsyncSession,
    principal: Principal,
    *,
    filters: FindingFilter,
    cursor: str | None,
    limit: int,
) -> tuple[list[FindingView], str | None]:
    """The organization's findings, newest first (by reading time, then id), filtered."""
    principal.require(Role.VIEWER)
    f = filters
    if f.since_ms is not None and f.until_ms is not None and f.since_ms >= f.until_ms:
        raise Invalid("from must be before to", code="INVALID_RANGE", details={"field": "from"})
    query = _findings_query(principal)
    if f.device_id is not None:
        query = query.where(AnalyticsFinding.device_id == f.device_id)
    if f.key is not None:
        query = query.where(AnalyticsFinding.key == f.key)
    if f.method is not None:
        query = query.where(AnalyticsFinding.method == f.method)
    if f.severity is not None:
        query = query.where(AnalyticsFinding.severity == f.severity)
    if f.since_ms is not None:
        query = query.where(AnalyticsFinding.ts >= f.since_ms)
    if f.until_ms is not None:
        query = query.where(AnalyticsFinding.ts < f.until_ms)
    query = paginate(
        query,
        sort=AnalyticsFinding.ts,
        id_column=AnalyticsFinding.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.execute(query)).all()
    items = [FindingView(finding, name) for finding, name in rows[:limit]]
    next_cursor = None
    if len(rows) > limit and items:
        last = items[-1].finding
        next_cursor = encode_cursor(last.ts, last.id)
    return items, next_cursor


async def get_finding(session: AsyncSession, principal: Principal, finding_id: int) -> FindingView:
    """One finding of the caller's organization."""
    principal.require(Role.VIEWER)
    row = (
        await session.execute(_findings_query(principal).where(AnalyticsFinding.id == finding_id))
    ).first()
    if row is None:
        raise NotFound("finding not found", code="FINDING_NOT_FOUND")
    return FindingView(row[0], row[1])


async def device_analytics(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID
) -> DeviceAnalytics:
    """A device's health, wear estimates (every configured wear key) and recent findings."""
    principal.require(Role.VIEWER)
    device = await devices.get_device(session, principal, device_id)
    settings = analytics_config.AnalyticsConfig(enabled=False)
    if device.profile_id is not None:
        stored = await session.scalar(
            select(DeviceProfile.analytics).where(
                DeviceProfile.id == device.profile_id,
                DeviceProfile.organization_id == principal.org_id,
            )
        )
        settings = analytics_config.parse(stored)
    health = await session.scalar(
        select(DeviceHealth).where(
            DeviceHealth.device_id == device.id, DeviceHealth.organization_id == principal.org_id
        )
    )
    findings, _ = await list_findings(
        session,
        principal,
        filters=FindingFilter(device_id=device.id),
        cursor=None,
        limit=RECENT_FINDINGS,
    )
    return DeviceAnalytics(
        device_id=device.id,
        name=device.name,
        configured=settings.watching,
        health=health,
        wear=_wear(health.wear if health is not None else {}, settings),
        findings=findings,
    )


def _wear(stored: Any, settings: analytics_config.AnalyticsConfig) -> list[WearView]:
    """Stored estimates by key, plus configured wear keys not estimated yet (no data)."""
    estimates: dict[str, dict[str, Any]] = {}
    if isinstance(stored, dict):
        estimates = {str(k): v for k, v in stored.items() if isinstance(v, dict)}
    specs = {key: ks.wear for key, ks in settings.keys.items() if settings.enabled and ks.wear}
    views = []
    for key in sorted(estimates.keys() | specs.keys()):
        raw = estimates.get(key, {})
        spec = specs.get(key)
        threshold = _optional_number(raw.get("threshold"))
        views.append(
            WearView(
                key=key,
                status=str(raw.get("status", "not_enough_data")),
                now_ms=_optional_int(raw.get("now_ms")),
                eta_ms=_optional_int(raw.get("eta_ms")),
                low_ms=_optional_int(raw.get("low_ms")),
                high_ms=_optional_int(raw.get("high_ms")),
                level=_optional_number(raw.get("level")),
                model=raw.get("model") if isinstance(raw.get("model"), str) else None,
                points=_optional_int(raw.get("points")) or 0,
                min_points=spec.min_points if spec else 100,
                current=_optional_number(raw.get("current")),
                threshold=threshold
                if threshold is not None
                else (spec.threshold if spec else None),
                direction=spec.direction if spec else "rising",
            )
        )
    return views


def _optional_number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _optional_int(value: Any) -> int | None:
    number = _optional_number(value)
    return int(number) if number is not None else None
