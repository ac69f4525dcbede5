"""Organizations' retention days: read and set by admins (audited), read by the job."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.config import Settings
from fleetcore.errors import Invalid
from fleetcore.housekeeping.models import RetentionOverride
from fleetcore.housekeeping.targets import BY_TABLE, OVERRIDABLE

MAX_DAYS = 3650  # ten years; longer is "forever" (0)


@dataclass(frozen=True, slots=True)
class TableRetention:
    """One table's effective days for the organization, and the platform default."""

    table: str
    days: int
    default_days: int
    min_days: int
    is_default: bool
    updated_at: datetime | None


async def get_retention(
    session: AsyncSession, principal: Principal, *, settings: Settings
) -> list[TableRetention]:
    """The caller's organization's days for every table it may decide (admins)."""
    principal.require(Role.ADMIN)
    rows = await _overrides(session, principal.org_id)
    views = []
    for target in OVERRIDABLE:
        row = rows.get(target.table)
        default = target.default_days(settings)
        views.append(
            TableRetention(
                target.table,
                default if row is None else row.days,
                default,
                target.min_days,
                row is None,
                None if row is None else row.updated_at,
            )
        )
    return views


async def set_retention(
    session: AsyncSession,
    principal: Principal,
    *,
    changes: Mapping[str, int | None],
    settings: Settings,
) -> list[TableRetention]:
    """Set (days) or reset to the default (None) the tables named in `changes` (admins);
    the others stay as they are. Audited with the days before and after."""
    principal.require(Role.ADMIN)
    for table, days in changes.items():
        _check(table, days)
    org_id = principal.org_id
    current = await get_retention(session, principal, settings=settings)
    before = {view.table: view.days for view in current}
    rows = await _overrides(session, org_id)
    for table, days in changes.items():
        row = rows.get(table)
        if days is None:
            if row is not None:
                await session.delete(row)
        elif row is None:
            session.add(RetentionOverride(organization_id=org_id, table_name=table, days=days))
        else:
            row.days = days
    await session.flush()
    after = await get_retention(session, principal, settings=settings)
    audit.record(
        session,
        action="housekeeping.retention.update",
        actor=principal,
        organization_id=org_id,
        target_type="organization",
        target_id=org_id,
        details={
            "before": {table: before[table] for table in changes},
            "after": {view.table: view.days for view in after if view.table in changes},
            "reset": sorted(table for table, days in changes.items() if days is None),
        },
    )
    await session.commit()
    return after


def _check(table: str, days: int | None) -> None:
    target = BY_TABLE.get(table)
    if target is None or not target.overridable:
        raise Invalid(
            f"{table} is not a table an organization sets its retention of",
            code="RETENTION_INVALID",
            details={"field": table},
        )
    if days is not None and days != 0 and not target.min_days <= days <= MAX_DAYS:
        raise Invalid(
            f"{table} must be 0 (forever) or between {target.min_days} and {MAX_DAYS} days",
            code="RETENTION_INVALID",
            details={"field": table},
        )


async def _overrides(session: AsyncSession, org_id: uuid.UUID) -> dict[str, RetentionOverride]:
    rows = await session.scalars(
        select(RetentionOverride).where(RetentionOverride.organization_id == org_id)
    )
    return {row.table_name: row for row in rows}
