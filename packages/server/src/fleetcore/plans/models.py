"""Plans (named sets of limits) and which plan an organization is on."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class Plan(Base):
    """Limits an organization lives within; NULL in a limit means unlimited."""

    __tablename__ = "plans"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    max_devices: Mapped[int | None] = mapped_column(Integer)
    max_readings_per_day: Mapped[int | None] = mapped_column(Integer)
    max_messages_per_second: Mapped[int | None] = mapped_column(Integer)
    max_retention_days: Mapped[int | None] = mapped_column(Integer)
    max_api_requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    max_users: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OrganizationPlan(Base):
    """An organization's plan; no row = the default, unlimited."""

    __tablename__ = "organization_plans"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    # RESTRICT: a plan in use cannot vanish from under its organizations (409 first).
    plan_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("plans.id", ondelete="RESTRICT"), index=True
    )
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanVersion(Base):
    """One row counting changes to plans and assignments: other processes' plan caches
    compare it every few seconds (one primary-key read) and reload only when it moved."""

    __tablename__ = "plan_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
