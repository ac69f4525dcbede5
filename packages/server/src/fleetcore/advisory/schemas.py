"""Request and response bodies of recommendations."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

RecommendationStatusName = Literal[
    "proposed", "approved", "rejected", "executed", "failed", "expired"
]
Note = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00]*$")]


class ApprovalOut(BaseModel):
    """One person's approval: their user id, role then, and when."""

    by: str
    role: str
    at: str
    note: str = ""


class RecommendationOut(BaseModel):
    """A recommendation, its evidence, who approved it, and what became of it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: uuid.UUID
    kind: str
    topic: str
    title: str
    rationale: str
    method: str | None = Field(description="the command; null for an inspection")
    params: dict[str, Any] | None
    evidence: dict[str, Any]
    status: RecommendationStatusName
    approvals: list[ApprovalOut]
    approvals_needed: int = Field(
        1, description="approvals it takes (2 for a method the safety policy marks critical)"
    )
    safety: list[dict[str, Any]] = Field(
        description="the safety validator's reasons at the last refused approval"
    )
    decided_by: uuid.UUID | None
    decision_note: str
    command_id: uuid.UUID | None
    command_status: str | None = None
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    updated_at: datetime


class NoteIn(BaseModel):
    """POST /api/v1/recommendations/{id}/approve and /done: an optional note."""

    model_config = ConfigDict(extra="forbid")

    note: Note = ""


class RejectIn(BaseModel):
    """POST /api/v1/recommendations/{id}/reject: why (required)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=1000, strip_whitespace=True, pattern=r"^[^\x00]*$"
        ),
    ]
