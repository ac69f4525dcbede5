"""Request and response bodies of rules and their dry run."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from fleetcore.alerts.models import Severity
from fleetcore.rules.conditions import Condition, check_shape

MAX_DURATION_S = 7 * 86_400
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class _Checked(BaseModel):
    @model_validator(mode="after")
    def _shape(self) -> Any:
        for field in ("condition", "clear_condition"):
            value = getattr(self, field, None)
            if value is not None:
                check_shape(value)
        return self


class RuleIn(_Checked):
    """POST /api/v1/rules: one scope (device_id, profile_id or asset_id) and a condition."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    device_id: uuid.UUID | None = None
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    condition: Condition
    duration_s: int = Field(0, ge=0, le=MAX_DURATION_S, description="hold this long to fire")
    clear_condition: Condition | None = Field(
        None, description="clears the alert (hysteresis); default: the condition stops holding"
    )
    severity: Severity = Severity.WARNING
    enabled: bool = True

    @model_validator(mode="after")
    def _one_scope(self) -> RuleIn:
        scopes = [s for s in ("device_id", "profile_id", "asset_id") if getattr(self, s)]
        if len(scopes) != 1:
            raise ValueError("give exactly one of device_id, profile_id or asset_id")
        return self


class RulePatch(_Checked):
    """PATCH /api/v1/rules/{id}: the fields to change (the scope is changed as a whole)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    device_id: uuid.UUID | None = None
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    condition: Condition | None = None
    duration_s: int | None = Field(None, ge=0, le=MAX_DURATION_S)
    clear_condition: Condition | None = None
    severity: Severity | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _scope_and_nulls(self) -> RulePatch:
        given = self.model_fields_set
        scopes = [s for s in ("device_id", "profile_id", "asset_id") if s in given]
        if scopes and len([s for s in scopes if getattr(self, s)]) != 1:
            raise ValueError("a new scope is exactly one of device_id, profile_id or asset_id")
        for field in ("name", "condition", "duration_s", "severity", "enabled", "description"):
            if field in given and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class RuleOut(BaseModel):
    """A rule as stored."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    device_id: uuid.UUID | None
    profile_id: uuid.UUID | None
    asset_id: uuid.UUID | None
    condition: dict[str, Any]
    duration_s: int
    clear_condition: dict[str, Any] | None
    severity: Severity
    enabled: bool
    created_at: datetime
    updated_at: datetime


class DryRunIn(_Checked):
    """POST /api/v1/rules/dry-run: a rule (saved or not) against stored telemetry."""

    model_config = ConfigDict(extra="forbid")

    rule_id: uuid.UUID | None = Field(None, description="a saved rule; else give the rule here")
    device_id: uuid.UUID | None = None
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    condition: Condition | None = None
    duration_s: int = Field(0, ge=0, le=MAX_DURATION_S)
    clear_condition: Condition | None = None
    start: str = Field(description="ISO 8601 or epoch ms")
    end: str | None = Field(None, description="default: now")
    only_device_id: uuid.UUID | None = Field(None, description="evaluate one device of the scope")

    @model_validator(mode="after")
    def _rule_or_condition(self) -> DryRunIn:
        scopes = [s for s in ("device_id", "profile_id", "asset_id") if getattr(self, s)]
        if self.rule_id is None:
            if self.condition is None:
                raise ValueError("give rule_id, or a condition and one scope")
            if len(scopes) != 1:
                raise ValueError("give exactly one of device_id, profile_id or asset_id")
        elif self.condition is not None or scopes:
            raise ValueError("give rule_id or a rule, not both")
        return self


class DryRunEpisode(BaseModel):
    """When the alert would have opened on a device, how often it repeated, when it cleared."""

    device_id: uuid.UUID
    opened_at: datetime
    cleared_at: datetime | None = Field(description="null: still open at the end of the range")
    count: int
    values: dict[str, Any] = Field(description="the values that opened it")


class DryRunOut(BaseModel):
    """The episodes, oldest first, and how much was evaluated."""

    devices: int
    readings: int
    truncated: bool = Field(description="the range held more readings than one dry run reads")
    episodes: list[DryRunEpisode]
