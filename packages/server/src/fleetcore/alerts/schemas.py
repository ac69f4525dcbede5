"""Request and response bodies of alerts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints

from fleetcore.alerts.models import AlertStatus, Severity


class AlertOut(BaseModel):
    """An alert and its lifecycle so far."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    rule_id: uuid.UUID | None
    device_id: uuid.UUID
    name: str
    severity: Severity
    status: AlertStatus
    count: int
    details: dict[str, Any]
    opened_at: datetime
    last_fired_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: uuid.UUID | None
    cleared_at: datetime | None
    cleared_by: uuid.UUID | None
    clear_reason: str | None
    assignee_id: uuid.UUID | None
    updated_at: datetime


class CommentIn(BaseModel):
    """POST /api/v1/alerts/{id}/comments."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=4000, strip_whitespace=True)]


class CommentOut(BaseModel):
    """A comment on an alert."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    alert_id: uuid.UUID
    author_id: uuid.UUID | None
    text: str
    created_at: datetime


class AlertPatch(BaseModel):
    """PATCH /api/v1/alerts/{id}: assign (a user of the organization) or unassign (null)."""

    model_config = ConfigDict(extra="forbid")

    assignee_id: uuid.UUID | None


class AlertDetail(AlertOut):
    """An alert with its comments, oldest first."""

    comments: list[CommentOut]
