"""GET / PUT /api/v1/telemetry/retention: the organization's retention policy (admins)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.telemetry import retention
from fleetcore.telemetry.retention import MAX_DAYS, Policy, PolicyView

router = APIRouter(prefix="/api/v1", tags=["telemetry"])

Days = Field(ge=0, le=MAX_DAYS, description="days kept; 0 = forever")


class RetentionIn(BaseModel):
    """PUT body: raw_days ≤ rollup_1m_days ≤ rollup_1h_days, where 0 (forever) is longest."""

    raw_days: int = Days
    rollup_1m_days: int = Days
    rollup_1h_days: int = Days
    requires_archive: bool | None = Field(
        None,
        description="delete raw readings only a whole archived day at a time (docs/archives.md);"
        " omitted: unchanged",
    )


class RetentionOut(BaseModel):
    """The effective policy; is_default when the organization has not set one."""

    raw_days: int
    rollup_1m_days: int
    rollup_1h_days: int
    requires_archive: bool
    is_default: bool
    updated_at: datetime | None

    @classmethod
    def of(cls, view: PolicyView) -> RetentionOut:
        """From the service's view."""
        return cls(
            raw_days=view.policy.raw_days,
            rollup_1m_days=view.policy.rollup_1m_days,
            rollup_1h_days=view.policy.rollup_1h_days,
            requires_archive=view.policy.requires_archive,
            is_default=view.is_default,
            updated_at=view.updated_at,
        )


@router.get("/telemetry/retention", summary="The organization's retention policy (admins)")
async def get_retention(
    session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """The platform defaults until the organization sets its own."""
    view = await retention.get_policy(
        session, principal, defaults=retention.default_policy(settings)
    )
    return RetentionOut.of(view)


@router.put(
    "/telemetry/retention",
    summary="Set the organization's retention policy (admins)",
)
async def put_retention(
    body: RetentionIn, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """Applies at the next retention run; audited."""
    defaults = retention.default_policy(settings)
    requires = body.requires_archive
    if requires is None:
        current = await retention.get_policy(session, principal, defaults=defaults)
        requires = current.policy.requires_archive
    view = await retention.set_policy(
        session,
        principal,
        policy=Policy(body.raw_days, body.rollup_1m_days, body.rollup_1h_days, requires),
        defaults=defaults,
    )
    return RetentionOut.of(view)
