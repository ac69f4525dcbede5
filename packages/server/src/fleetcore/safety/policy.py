"""A device profile's safety policy: which methods an approved action may use, the bounds of
their params, how fast a setpoint may move, the interlocks, and which methods need two people.

A validated pydantic model, so it can be stored as JSON on the profile and edited through the
API. Everything not listed is refused: the empty policy denies every method. A policy that
names something it does not define (an interlock on an unknown method or param) is invalid
rather than silently inert, because a typo would disable the interlock it meant to add.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Every number a policy holds or a request may carry stays within this magnitude: the limits
# are compared exactly (numbers.py) and nothing physical needs more.
MAX_MAGNITUDE = 1e15
MAX_METHODS = 100
MAX_PARAMS = 50
MAX_ALLOWED_VALUES = 100
MAX_INTERLOCKS = 100

Severity = Literal["critical", "major", "minor", "warning", "info"]
# From most to least urgent, as fleetcore.alerts.models.Severity (a test keeps them equal).
SEVERITIES: tuple[Severity, ...] = ("critical", "major", "minor", "warning", "info")
ParamType = Literal["number", "integer", "string", "boolean"]
Direction = Literal["any", "increase", "decrease"]

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_MAGNITUDE, le=MAX_MAGNITUDE)]
NonNegative = Annotated[float, Field(allow_inf_nan=False, ge=0, le=MAX_MAGNITUDE)]
Scalar = bool | int | Finite | Annotated[str, StringConstraints(max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRule(_Strict):
    """One param of a method: its type and bounds; for a setpoint, how fast it may move."""

    type: ParamType
    required: bool = True
    min: Finite | None = None
    max: Finite | None = None
    allowed: list[Scalar] | None = Field(None, min_length=1, max_length=MAX_ALLOWED_VALUES)
    max_length: int | None = Field(None, ge=0, le=16_384, description="strings only")
    key: Name | None = Field(
        None, description="the key of its current value in the device's state; the param's name"
    )
    max_step: NonNegative | None = Field(None, description="largest change from the current value")
    max_step_relative: NonNegative | None = Field(
        None, description="largest change as a fraction of |current value| (0.1 = 10 %)"
    )
    max_change_per_hour: NonNegative | None = Field(
        None, description="largest total movement of the key within any sliding hour"
    )

    @property
    def numeric(self) -> bool:
        """True for number and integer params."""
        return self.type in ("number", "integer")

    @property
    def limits_motion(self) -> bool:
        """True if the param is a setpoint with a step or hourly limit."""
        return (
            self.max_step is not None
            or self.max_step_relative is not None
            or self.max_change_per_hour is not None
        )

    @model_validator(mode="after")
    def _coherent(self) -> ParamRule:
        if not self.numeric and (self.min is not None or self.max is not None):
            raise ValueError("min and max apply to number and integer params only")
        if not self.numeric and self.limits_motion:
            raise ValueError("step and hourly limits apply to number and integer params only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        if self.max_length is not None and self.type != "string":
            raise ValueError("max_length applies to string params only")
        for value in self.allowed or ():
            if not _fits(self.type, value):
                raise ValueError(f"allowed value {value!r} is not of type {self.type}")
        return self


def _fits(kind: ParamType, value: object) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "number" or float(value).is_integer()


class MethodPolicy(_Strict):
    """A method approved actions may use, its params (no others), and whether two people must
    approve it."""

    params: dict[Name, ParamRule] = Field(default_factory=dict, max_length=MAX_PARAMS)
    critical: bool = Field(
        False, description="two approvals by distinct people other than the requester"
    )
    description: Annotated[str, StringConstraints(max_length=500)] = ""


class AlertCondition(_Strict):
    """Matches an active alert of the device; every field given must hold (none: any alert)."""

    severity_at_least: Severity | None = None
    rule: Name | None = Field(None, description="the alert's rule name")
    key: Name | None = Field(None, description="the telemetry key the alert is about")


class Interlock(_Strict):
    """Refuse `method` (any method when omitted) while an active alert matches `when`; with a
    `param`, only requests that set it, moving it in `direction` from its current value."""

    name: Name
    method: Name | None = None
    param: Name | None = None
    direction: Direction = "any"
    when: AlertCondition = Field(default_factory=AlertCondition)

    @model_validator(mode="after")
    def _coherent(self) -> Interlock:
        if self.direction != "any" and self.param is None:
            raise ValueError("a direction needs a param")
        return self


class SafetyPolicy(_Strict):
    """A profile's safety policy; the empty policy allows nothing."""

    methods: dict[Name, MethodPolicy] = Field(default_factory=dict, max_length=MAX_METHODS)
    interlocks: list[Interlock] = Field(default_factory=list, max_length=MAX_INTERLOCKS)

    @model_validator(mode="after")
    def _interlocks_refer(self) -> SafetyPolicy:
        for lock in self.interlocks:
            methods = [lock.method] if lock.method is not None else list(self.methods)
            if lock.method is not None and lock.method not in self.methods:
                raise ValueError(f"interlock {lock.name!r}: no method {lock.method!r}")
            if lock.param is None:
                continue
            holders = [m for m in methods if lock.param in self.methods[m].params]
            if not holders:
                raise ValueError(f"interlock {lock.name!r}: no method has param {lock.param!r}")
            if lock.direction != "any" and not all(
                self.methods[m].params[lock.param].numeric for m in holders
            ):
                raise ValueError(f"interlock {lock.name!r}: a direction needs a numeric param")
        return self
