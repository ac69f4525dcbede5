"""Analytics read API: the fleet's health ranking, findings, one device's analytics."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from fleetcore.advisory.analytics_schemas import DeviceAnalyticsOut, FindingOut, RankedDeviceOut
from fleetcore.analytics import queries
from fleetcore.analytics.findings import Method
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])

MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@router.get("/fleet", summary="Devices by health, worst first")
async def fleet(
    session: SessionDep, principal: PrincipalDep, cursor: CursorQuery = None, limit: LimitQuery = 50
) -> Page[RankedDeviceOut]:
    """Devices that have a health score, lowest first, with their top contributors."""
    rows, next_cursor = await queries.fleet_health(session, principal, cursor=cursor, limit=limit)
    return Page(items=[RankedDeviceOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/findings", summary="List findings")
async def list_findings(
    session: SessionDep,
    principal: PrincipalDep,
    device_id: uuid.UUID | None = None,
    key: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    method: Method | None = None,
    severity: Literal["info", "warning", "critical"] | None = None,
    since: Annotated[
        int | None, Query(alias="from", ge=0, le=MAX_MS, description="epoch ms, inclusive")
    ] = None,
    until: Annotated[
        int | None, Query(alias="to", ge=0, le=MAX_MS, description="epoch ms, exclusive")
    ] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[FindingOut]:
    """Newest first (by the time of the reading that completed the finding)."""
    filters = queries.FindingFilter(
        device_id=device_id,
        key=key,
        method=method.value if method else None,
        severity=severity,
        since_ms=since,
        until_ms=until,
    )
    rows, next_cursor = await queries.list_findings(
        session, principal, filters=filters, cursor=cursor, limit=limit
    )
    return Page(items=[FindingOut.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/findings/{finding_id}", summary="One finding")
async def get_finding(
    finding_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    principal: PrincipalDep,
) -> FindingOut:
    """404 FINDING_NOT_FOUND for another organization's."""
    return FindingOut.of(await queries.get_finding(session, principal, finding_id))


@router.get("/devices/{device_id:uuid}", summary="A device's health, wear and findings")
async def device_analytics(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> DeviceAnalyticsOut:
    """Health (null before the first score), every wear key's estimate, recent findings."""
    return DeviceAnalyticsOut.of(await queries.device_analytics(session, principal, device_id))
