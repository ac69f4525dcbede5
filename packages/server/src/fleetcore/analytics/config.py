"""A profile's analytics settings (DeviceProfile.analytics): which keys are watched, how
sensitive each is, which degrade toward a failure threshold, and what to recommend.

Validated with pydantic when a profile is saved, and read again by the engine (an invalid
stored value, from before a change of these rules, watches nothing rather than failing).
Sensitivity overrides are checked against the fields of Sensitivity, so a typo is an error,
not a setting silently ignored. Ranges come from the profile's telemetry keys (min/max) unless
the key's sensitivity names its own.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from fleetcore.analytics.detect import Sensitivity
from fleetcore.analytics.findings import Method
from fleetcore.analytics.wear import DAY_MS, WearConfig

MAX_KEYS = 50
MAX_RULES = 20
KeyName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\s]+$")]
Kind = Literal["inspect", "adjust_setpoint", "reduce_speed", "schedule_maintenance", "stop"]
Trigger = Literal["robust_z", "ewma", "spike", "stuck", "drift", "range", "wear"]
_SENSITIVITY = {f.name: f for f in fields(Sensitivity)}
_BOUNDS = 1e15


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WearSpec(_Strict):
    """A degrading key: its failure threshold and in which direction it fails."""

    threshold: float = Field(allow_inf_nan=False, ge=-_BOUNDS, le=_BOUNDS)
    direction: Literal["rising", "falling"] = "rising"
    min_points: int = Field(100, ge=20, le=720, description="hourly means before an estimate")
    warn_within_days: float = Field(
        14.0, gt=0, le=365, description="recommend when failure is plausible within this"
    )

    def config(self) -> WearConfig:
        """The wear module's config."""
        return WearConfig(
            threshold=self.threshold, direction=self.direction, min_points=self.min_points
        )

    @property
    def warn_within_ms(self) -> int:
        """warn_within_days in milliseconds."""
        return int(self.warn_within_days * DAY_MS)


class KeySettings(_Strict):
    """How one key is watched."""

    sensitivity: dict[str, float | int | bool | None] = Field(default_factory=dict)
    wear: WearSpec | None = None

    @field_validator("sensitivity")
    @classmethod
    def _known(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            if name not in _SENSITIVITY:
                raise ValueError(f"unknown sensitivity setting {name!r}")
            if isinstance(item, float) and (item != item or abs(item) > _BOUNDS):
                raise ValueError(f"{name} must be a finite number")
        try:
            Sensitivity(**value)
        except TypeError as error:  # pragma: no cover - names are checked above
            raise ValueError(str(error)) from None
        return value


class ParamFrom(_Strict):
    """A param computed from the device's current value of a key: value x times + plus."""

    from_key: KeyName
    times: float = Field(1.0, allow_inf_nan=False, ge=-1e6, le=1e6)
    plus: float = Field(0.0, allow_inf_nan=False, ge=-_BOUNDS, le=_BOUNDS)


ParamValue = (
    bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(max_length=256)]
    | ParamFrom
)


class RecommendRule(_Strict):
    """When a finding (or a wear estimate) matches, propose this action."""

    on: Trigger
    key: KeyName | None = Field(None, description="a watched key; none: any")
    severity: Literal["warning", "critical"] | None = Field(None, description="none: any")
    kind: Kind
    title: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    method: KeyName | None = Field(None, description="the command; none for an inspection")
    params: dict[KeyName, ParamValue] = Field(default_factory=dict, max_length=50)
    expires_after_s: int = Field(86_400, ge=60, le=30 * 86_400)

    @model_validator(mode="after")
    def _command(self) -> RecommendRule:
        """An inspection sends nothing; every other kind sends a command."""
        if self.kind == "inspect" and (self.method is not None or self.params):
            raise ValueError("an inspection has no method or params")
        if self.kind != "inspect" and self.method is None:
            raise ValueError(f"a {self.kind} recommendation needs the command's method")
        return self


class AnalyticsConfig(_Strict):
    """DeviceProfile.analytics."""

    enabled: bool = True
    keys: dict[KeyName, KeySettings] = Field(default_factory=dict, max_length=MAX_KEYS)
    recommend: list[RecommendRule] = Field(default_factory=list, max_length=MAX_RULES)

    @property
    def watching(self) -> bool:
        """True if any key is watched."""
        return self.enabled and bool(self.keys)


def parse(stored: dict[str, Any] | None) -> AnalyticsConfig:
    """The stored settings, or none watched if they no longer validate."""
    try:
        return AnalyticsConfig.model_validate(stored or {})
    except ValidationError:
        return AnalyticsConfig(enabled=False)


def sensitivity(settings: KeySettings, telemetry_key: dict[str, Any] | None) -> Sensitivity:
    """The key's Sensitivity: its overrides, and the profile's min/max as the range."""
    values: dict[str, Any] = {}
    if telemetry_key is not None:
        if telemetry_key.get("min") is not None:
            values["range_low"] = float(telemetry_key["min"])
        if telemetry_key.get("max") is not None:
            values["range_high"] = float(telemetry_key["max"])
    values.update(settings.sensitivity)
    return Sensitivity(**values)


def matches(rule: RecommendRule, trigger: str, key: str, severity: str) -> bool:
    """Whether a finding (method, key, severity) or a wear warning triggers the rule."""
    return (
        rule.on == trigger
        and (rule.key is None or rule.key == key)
        and (rule.severity is None or rule.severity == severity)
    )


TRIGGERS = frozenset({*(m.value for m in Method), "wear"})
