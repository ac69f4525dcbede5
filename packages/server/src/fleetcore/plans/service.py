"""Plans: superusers define them and assign them; admins read their own; creation paths
ask `admit` before adding a device or a user."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import Organization, User
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, NotFound
from fleetcore.plans import notify
from fleetcore.plans.cache import bump_version, limits_of_plan
from fleetcore.plans.limits import Limit, PlanLimits, plan_limit
from fleetcore.plans.models import OrganizationPlan, Plan
from fleetcore.plans.quota import READINGS, UsageToday
from fleetcore.plans.schemas import PlanIn

# The limits counted from rows when something is created (the others are rates).
COUNTED = (Limit.DEVICES, Limit.USERS)


def _name_taken(name: str) -> Conflict:
    return Conflict(
        f"a plan named {name!r} exists", code="PLAN_NAME_TAKEN", details={"field": "name"}
    )


def _not_found() -> NotFound:
    return NotFound("plan not found", code="PLAN_NOT_FOUND")


async def create_plan(session: AsyncSession, principal: Principal, *, data: PlanIn) -> Plan:
    """A new plan (superusers)."""
    principal.require_superuser()
    if await session.scalar(select(Plan.id).where(Plan.name == data.name)):
        raise _name_taken(data.name)
    plan = Plan(**data.model_dump())
    session.add(plan)
    await flush_or_conflict(session, _name_taken(data.name))
    _audit(session, principal, "plan.create", plan, data.model_dump())
    await session.commit()
    return plan


async def list_plans(session: AsyncSession, principal: Principal) -> Sequence[Plan]:
    """Every plan, by name (superusers)."""
    principal.require_superuser()
    return (await session.scalars(select(Plan).order_by(Plan.name))).all()


async def get_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID) -> Plan:
    """One plan (superusers)."""
    principal.require_superuser()
    plan = await session.get(Plan, plan_id)
    if plan is None:
        raise _not_found()
    return plan


async def update_plan(
    session: AsyncSession, principal: Principal, plan_id: uuid.UUID, *, data: PlanIn
) -> Plan:
    """Replace a plan's name and limits (superusers); its organizations follow at once."""
    plan = await get_plan(session, principal, plan_id)
    if data.name != plan.name and await session.scalar(
        select(Plan.id).where(Plan.name == data.name)
    ):
        raise _name_taken(data.name)
    before = PlanIn.model_validate(plan, from_attributes=True).model_dump()
    for field, value in data.model_dump().items():
        setattr(plan, field, value)
    await flush_or_conflict(session, _name_taken(data.name))
    _audit(session, principal, "plan.update", plan, {"before": before, "after": data.model_dump()})
    await bump_version(session)
    await session.commit()
    return plan


async def delete_plan(session: AsyncSession, principal: Principal, plan_id: uuid.UUID) -> None:
    """Remove a plan no organization is on (superusers); 409 while one is."""
    plan = await get_plan(session, principal, plan_id)
    in_use = await session.scalar(
        select(func.count())
        .select_from(OrganizationPlan)
        .where(OrganizationPlan.plan_id == plan.id)
    )
    if in_use:
        raise Conflict(
            f"{in_use} organization(s) are on this plan; assign them another first",
            code="PLAN_IN_USE",
            details={"organizations": in_use},
        )
    _audit(session, principal, "plan.delete", plan, {"name": plan.name})
    await session.delete(plan)
    await session.commit()


async def assign_plan(
    session: AsyncSession,
    principal: Principal,
    organization_id: uuid.UUID,
    *,
    plan_id: uuid.UUID | None,
) -> OrganizationPlan | None:
    """Put an organization on a plan, or back on the default (None: unlimited); superusers.
    Another organization's caller: 404, as for any of its objects; its own admins: 403."""
    if not principal.is_superuser and organization_id != principal.organization_id:
        raise NotFound("organization not found", code="ORGANIZATION_NOT_FOUND")
    principal.require_superuser()
    if await session.get(Organization, organization_id) is None:
        raise NotFound("organization not found", code="ORGANIZATION_NOT_FOUND")
    if plan_id is not None and await session.get(Plan, plan_id) is None:
        raise NotFound("plan not found", code="PLAN_NOT_FOUND", details={"field": "plan_id"})
    row = await session.get(OrganizationPlan, organization_id)
    before = str(row.plan_id) if row else None
    if plan_id is None:
        if row is not None:
            await session.delete(row)
        row = None
    elif row is None:
        row = OrganizationPlan(organization_id=organization_id, plan_id=plan_id)
        session.add(row)
    else:
        row.plan_id = plan_id
        row.assigned_at = utcnow()
    await bump_version(session)
    audit.record(
        session,
        action="plan.assign",
        actor=principal,
        organization_id=organization_id,
        target_type="organization",
        target_id=organization_id,
        details={"before": before, "after": str(plan_id) if plan_id else None},
    )
    await session.commit()
    return row


@dataclass(frozen=True, slots=True)
class PlanView:
    """An organization's plan (None: the default) and how much of each limit is used."""

    organization_id: uuid.UUID
    plan: Plan | None
    assigned_at: datetime | None
    usage: list[tuple[Limit, int | None, int | None]]  # limit, max, used (None: a rate)


async def organization_plan(
    session: AsyncSession,
    principal: Principal,
    organization_id: uuid.UUID,
    *,
    meter: UsageToday | None,
) -> PlanView:
    """An organization's plan and use: admins of it, or superusers (others: 404)."""
    principal.require(Role.ADMIN)
    if not principal.is_superuser and organization_id != principal.org_id:
        raise NotFound("organization not found", code="ORGANIZATION_NOT_FOUND")
    if await session.get(Organization, organization_id) is None:
        raise NotFound("organization not found", code="ORGANIZATION_NOT_FOUND")
    row = await session.get(OrganizationPlan, organization_id)
    plan = await session.get(Plan, row.plan_id) if row else None
    limits = limits_of_plan(plan) if plan else None
    usage: list[tuple[Limit, int | None, int | None]] = []
    for limit in Limit:
        used: int | None = None
        if limit in COUNTED:
            used = await count(session, organization_id, limit)
        elif limit is Limit.READINGS_PER_DAY and meter is not None:
            used = meter.today(organization_id, READINGS)
        usage.append((limit, limits.of(limit) if limits else None, used))
    return PlanView(organization_id, plan, row.assigned_at if row else None, usage)


async def limits_for(
    session: AsyncSession, organization_id: uuid.UUID, *, lock: bool = False
) -> PlanLimits | None:
    """The organization's limits read from the database (creation paths: not the hot path).
    `lock`: hold its plan row until the transaction ends (PostgreSQL; see `admit`)."""
    query = (
        select(Plan)
        .join(OrganizationPlan, OrganizationPlan.plan_id == Plan.id)
        .where(OrganizationPlan.organization_id == organization_id)
    )
    if lock:
        query = query.with_for_update(of=OrganizationPlan)
    plan = await session.scalar(query)
    return limits_of_plan(plan) if plan else None


async def count(session: AsyncSession, organization_id: uuid.UUID, limit: Limit) -> int:
    """What counts against a counted limit now: live devices, or active users."""
    if limit is Limit.DEVICES:
        query = select(func.count()).where(
            Device.organization_id == organization_id, Device.deleted_at.is_(None)
        )
    elif limit is Limit.USERS:
        query = select(func.count()).where(
            User.organization_id == organization_id, User.is_active.is_(True)
        )
    else:
        raise ValueError(f"{limit} is not counted")
    return int(await session.scalar(query) or 0)


async def admit(
    session: AsyncSession, organization_id: uuid.UUID, limit: Limit, *, adding: int = 1
) -> None:
    """Before adding `adding` devices or users: 403 PLAN_LIMIT if the plan has no room,
    else the soft-limit notices reached, staged to commit with the change.

    Two creations at once must not both see the last free place: on PostgreSQL the
    organization's plan row stays locked until the caller's transaction ends, so the next
    creation counts after this one committed (READ COMMITTED: each statement sees the
    commits before it). Organizations without a plan take no lock. SQLite needs none: write
    sessions begin IMMEDIATE, one writer at a time."""
    limits = await limits_for(session, organization_id, lock=True)
    maximum = limits.of(limit) if limits else None
    if maximum is None:
        return
    used = await count(session, organization_id, limit)
    if used + adding > maximum:
        raise plan_limit(limit, maximum, used)
    await notify.warn(session, organization_id, limit, used=used + adding, maximum=maximum)


def _audit(
    session: AsyncSession, principal: Principal, action: str, plan: Plan, details: dict[str, object]
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=None,
        target_type="plan",
        target_id=plan.id,
        details=details,
    )


async def assignments(session: AsyncSession, principal: Principal) -> dict[uuid.UUID, uuid.UUID]:
    """organization id -> plan id of every organization on a plan (superusers)."""
    principal.require_superuser()
    rows = await session.execute(select(OrganizationPlan.organization_id, OrganizationPlan.plan_id))
    return {org_id: plan_id for org_id, plan_id in rows}
