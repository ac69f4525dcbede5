"""Each organization's plan limits in this process's memory, for the hot path.

Organizations without a plan have no entry: a look-up is one dict miss, so installs that
never assign a plan pay nothing else. The cache is reloaded whole (assignments are few) when
a plan changes through this process. Changes made through other processes (several
`serve` processes on one PostgreSQL, whatever their role) arrive by `refresh`, a job every
REFRESH_S: one primary-key read of the change counter (plan_versions, bumped in the same
transaction as every change), and a reload only when it moved.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Database
from fleetcore.plans.limits import PlanLimits
from fleetcore.plans.models import OrganizationPlan, Plan, PlanVersion

log = structlog.get_logger(__name__)

REFRESH_S = 5.0  # how soon a plan changed through another process applies here


def limits_of_plan(plan: Plan) -> PlanLimits:
    """A plan row as the hot path reads it."""
    return PlanLimits(
        plan_id=str(plan.id),
        plan_name=plan.name,
        devices=plan.max_devices,
        readings_per_day=plan.max_readings_per_day,
        messages_per_second=plan.max_messages_per_second,
        retention_days=plan.max_retention_days,
        api_requests_per_minute=plan.max_api_requests_per_minute,
        users=plan.max_users,
    )


_ROW = 1  # plan_versions holds one row


async def bump_version(session: AsyncSession) -> None:
    """Count a change to plans or assignments (commits with it): other processes reload.
    An upsert, so a database whose row is missing (emptied by hand, tests) gets it back."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(PlanVersion)
        .values(id=_ROW, version=1)
        .on_conflict_do_update(index_elements=["id"], set_={"version": PlanVersion.version + 1})
    )


async def _version(session: AsyncSession) -> int:
    return int(await session.scalar(select(PlanVersion.version).where(PlanVersion.id == _ROW)) or 0)


class PlanCache:
    """organization id -> its plan's limits; absent = unlimited."""

    def __init__(self) -> None:
        self._by_org: dict[uuid.UUID, PlanLimits] = {}
        # Whether any organization has an API request limit (the API limiter then runs).
        self.api_limited = False
        self._version: int | None = None  # the change counter the map was read at

    def limits_of(self, organization_id: uuid.UUID) -> PlanLimits | None:
        """The organization's limits, None when it has no plan (unlimited)."""
        return self._by_org.get(organization_id)

    def api_rate(self, organization_id: uuid.UUID) -> int | None:
        """The plan's API requests per minute of the organization (None: no plan value)."""
        limits = self._by_org.get(organization_id)
        return limits.api_requests_per_minute if limits else None

    async def load_at_start(self, database: Database) -> None:
        """The first read, before serving. A database that cannot answer (down, schema
        behind) must not stop the process: /ready says what is wrong, and the refresh job
        reads the plans once it can (`_version` stays None until then)."""
        try:
            await self.reload(database)
        except Exception as exc:
            log.warning("plans_not_loaded", error=str(exc).splitlines()[0][:300])

    async def refresh(self, database: Database) -> None:
        """Reload if a plan or an assignment changed since the last read (any process)."""
        async with database.session() as session:
            if await _version(session) == self._version:
                return
        await self.reload(database)

    async def reload(self, database: Database) -> None:
        """Read every assignment again (a plan changed, or the counter moved)."""
        async with database.session() as session:
            # The counter first: a change committed in between is read by the query below
            # and leaves the counter behind, so the next refresh reloads again (never misses).
            version = await _version(session)
            rows = (
                await session.execute(
                    select(OrganizationPlan.organization_id, Plan).join(
                        Plan, Plan.id == OrganizationPlan.plan_id
                    )
                )
            ).all()
        by_org = {org_id: limits_of_plan(plan) for org_id, plan in rows}
        self._by_org = by_org  # swapped whole: readers never see a half-built map
        self._version = version
        self.api_limited = any(p.api_requests_per_minute is not None for p in by_org.values())
