"""Request and response bodies of the plans API."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

# Each limit: a positive number, or null for unlimited.
_INT32 = 2_147_483_647
MAX_DAYS = 3650  # telemetry retention's own bound (telemetry.retention.MAX_DAYS)
Count = Field(None, ge=0, le=_INT32)


class PlanIn(BaseModel):
    """POST /api/v1/plans and PUT /api/v1/plans/{id}: every limit null = unlimited."""

    name: str = Field(min_length=1, max_length=100)
    max_devices: int | None = Count
    max_readings_per_day: int | None = Count
    max_messages_per_second: int | None = Field(None, ge=1, le=1_000_000)
    max_retention_days: int | None = Field(None, ge=1, le=MAX_DAYS)
    max_api_requests_per_minute: int | None = Field(None, ge=1, le=1_000_000)
    max_users: int | None = Count


class PlanOut(PlanIn):
    """A plan."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class AssignmentIn(BaseModel):
    """PUT /api/v1/organizations/{id}/plan: a plan's id, or null for the default (unlimited)."""

    plan_id: uuid.UUID | None


class LimitUse(BaseModel):
    """One limit of the organization's plan and how much of it is used now."""

    limit: str
    max: int | None
    used: int | None  # None: not a count (messages per second, retention days, API rate)


class OrganizationPlanOut(BaseModel):
    """An organization's plan (null: the default, unlimited) and its current use."""

    organization_id: uuid.UUID
    plan: PlanOut | None
    assigned_at: datetime | None
    usage: list[LimitUse]
