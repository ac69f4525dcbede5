"""What the /recommendations pages show of each recommendation: its device, evidence in words,
approvals so far against how many the device's safety policy needs, who decided.

Reads only; every decision goes through the recommendations API (approve, reject, done),
which is the gate. Approvals needed follow the two-person rule of fleetcore.safety: two for
a method the profile's policy marks critical, else one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.advisory import recommendations, wording
from fleetcore.analytics.models import Recommendation, RecommendationKind, RecommendationStatus
from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal, Role
from fleetcore.devices.models import Device, DeviceProfile

HISTORY = 50
PROPOSED = 100


@dataclass(slots=True)
class RecommendationView:
    """A recommendation with what its card shows."""

    rec: Recommendation
    device_name: str
    needed: int
    evidence: list[str]
    approvers: list[str]
    decided_by: str | None
    approved_by_me: bool
    safety: list[dict[str, Any]] = field(default_factory=list)

    @property
    def approvals_text(self) -> str:
        """e.g. "1 of 2"."""
        return f"{len(self.rec.approvals)} of {self.needed}"

    @property
    def can_mark_done(self) -> bool:
        """An approved inspection waits for a person to say it was done."""
        return (
            self.rec.kind == RecommendationKind.INSPECT
            and self.rec.status == RecommendationStatus.APPROVED
        )


async def for_review(
    session: AsyncSession, principal: Principal
) -> tuple[list[RecommendationView], list[RecommendationView]]:
    """Proposed recommendations (newest first), then the latest decided ones."""
    principal.require(Role.VIEWER)
    base = select(Recommendation).where(Recommendation.organization_id == principal.org_id)
    proposed = (
        await session.scalars(
            base.where(Recommendation.status == RecommendationStatus.PROPOSED)
            .order_by(Recommendation.created_at.desc(), Recommendation.id)
            .limit(PROPOSED)
        )
    ).all()
    history = (
        await session.scalars(
            base.where(Recommendation.status != RecommendationStatus.PROPOSED)
            .order_by(Recommendation.updated_at.desc(), Recommendation.id)
            .limit(HISTORY)
        )
    ).all()
    views = await _views(session, principal, [*proposed, *history])
    return views[: len(proposed)], views[len(proposed) :]


async def one(
    session: AsyncSession, principal: Principal, recommendation_id: uuid.UUID
) -> RecommendationView:
    """One recommendation of the caller's organization."""
    principal.require(Role.VIEWER)
    rec = await recommendations.get_recommendation(session, principal, recommendation_id)
    return (await _views(session, principal, [rec]))[0]


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


async def _views(
    session: AsyncSession, principal: Principal, recs: list[Recommendation]
) -> list[RecommendationView]:
    device_ids = {r.device_id for r in recs}
    devices: dict[uuid.UUID, tuple[str, Any]] = {}
    if device_ids:
        rows = await session.execute(
            select(Device.id, Device.name, DeviceProfile.safety_policy)
            .outerjoin(DeviceProfile, DeviceProfile.id == Device.profile_id)
            .where(Device.id.in_(device_ids), Device.organization_id == principal.org_id)
        )
        devices = {device_id: (name, policy) for device_id, name, policy in rows.all()}
    people = {
        u for r in recs for a in r.approvals if isinstance(a, dict) and (u := _uuid(a.get("by")))
    }
    people |= {r.decided_by for r in recs if r.decided_by}
    emails: dict[uuid.UUID, str] = {}
    if people:
        found = await session.execute(
            select(User.id, User.email).where(
                User.id.in_(people), User.organization_id == principal.org_id
            )
        )
        emails = {user_id: email for user_id, email in found.all()}
    me = principal.user_id
    views = []
    for rec in recs:
        name, policy = devices.get(rec.device_id, ("deleted device", None))
        approvers = [
            emails.get(u, str(u)) if (u := _uuid(a.get("by"))) else str(a.get("by"))
            for a in rec.approvals
            if isinstance(a, dict)
        ]
        views.append(
            RecommendationView(
                rec=rec,
                device_name=name,
                needed=recommendations.approvals_needed(policy, rec.method),
                evidence=wording.evidence_lines(rec.evidence),
                approvers=approvers,
                decided_by=emails.get(rec.decided_by) if rec.decided_by else None,
                approved_by_me=me is not None
                and any(isinstance(a, dict) and _uuid(a.get("by")) == me for a in rec.approvals),
                safety=[s for s in rec.safety if isinstance(s, dict)]
                if isinstance(rec.safety, list)
                else [],
            )
        )
    return views
