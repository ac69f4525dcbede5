"""Request and response bodies of device profiles."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fleetcore.analytics.config import AnalyticsConfig
from fleetcore.commands.limits import MAX_SCHEMA_OBJECTS, shape_problem
from fleetcore.commands.safe_schema import count_objects
from fleetcore.config import MEDIA_MAX_BYTES_CEILING
from fleetcore.devices.models import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MQTT_BURST,
    DEFAULT_MQTT_RATE_PER_S,
)
from fleetcore.devices.schemas import ONE_LINE, Name, not_null
from fleetcore.safety.policy import SafetyPolicy

MAX_TELEMETRY_KEYS = 1000
# ProfilePatch fields that may be sent as null (to clear them).
NULLABLE_PATCH_FIELDS = frozenset({"safety_policy", "media_max_bytes"})

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")
]

ProvisionSecret = Annotated[str, StringConstraints(min_length=16, max_length=128, pattern=ONE_LINE)]
Description = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
MqttRate = Annotated[
    float,
    Field(gt=0, le=10_000, allow_inf_nan=False, description="sustained MQTT messages per second"),
]
MqttBurst = Annotated[
    int, Field(ge=1, le=100_000, description="MQTT messages allowed at once above the rate")
]
MaxPayloadBytes = Annotated[
    int, Field(ge=64, le=1024 * 1024, description="largest MQTT payload a device may publish")
]
MediaMaxBytes = Annotated[
    int,
    Field(
        ge=1024,
        le=MEDIA_MAX_BYTES_CEILING,
        description="largest image a device may send (null: FLEETCORE_MEDIA_MAX_BYTES, 10 MB)",
    ),
]


def _check_range(low: float | None, high: float | None) -> None:
    if low is not None and high is not None and low > high:
        raise ValueError("min must not exceed max")


class TelemetryKey(BaseModel):
    """A key a device of the profile reports, with its type and (for numbers) range."""

    model_config = ConfigDict(extra="forbid")

    key: Identifier
    type: Literal["number", "string", "boolean", "json"] = "number"
    unit: Annotated[str, StringConstraints(max_length=32, pattern=ONE_LINE)] | None = None
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _range(self) -> TelemetryKey:
        if self.type != "number" and (self.min is not None or self.max is not None):
            raise ValueError(f"key {self.key!r}: min and max apply to number keys only")
        _check_range(self.min, self.max)
        return self


MethodName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class CommandLimits(BaseModel):
    """Which command methods devices of the profile accept, each with a JSON Schema for its
    params (null: any params). Without `allowed`, every method is allowed."""

    model_config = ConfigDict(extra="forbid")

    allowed: dict[MethodName, dict[str, Any] | None] | None = Field(None, max_length=500)

    @field_validator("allowed")
    @classmethod
    def _schemas(cls, allowed: dict[str, dict[str, Any] | None] | None) -> Any:
        # Only what is cheap here, on the event loop; the service checks the schemas
        # themselves on a worker thread (commands.limits.check_schemas).
        objects = 0
        for method, schema in (allowed or {}).items():
            problem = shape_problem(schema) if schema is not None else None
            if problem is not None:
                raise ValueError(f"the params schema of {method!r} is {problem}")
            objects += count_objects(schema)
        if objects > MAX_SCHEMA_OBJECTS:
            raise ValueError(
                f"the params schemas hold {objects} JSON objects together; "
                f"at most {MAX_SCHEMA_OBJECTS}"
            )
        return allowed

    def stored(self) -> dict[str, Any]:
        """What DeviceProfile.command_limits holds."""
        return {} if self.allowed is None else {"allowed": self.allowed}


def _unique_keys(keys: list[TelemetryKey]) -> list[TelemetryKey]:
    seen: set[str] = set()
    for item in keys:
        if item.key in seen:
            raise ValueError(f"duplicate key {item.key!r}")
        seen.add(item.key)
    return keys


class ProfileIn(BaseModel):
    """POST /api/v1/device-profiles. Missing provisioning credentials are generated."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    telemetry_keys: list[TelemetryKey] = Field(default_factory=list, max_length=MAX_TELEMETRY_KEYS)
    out_of_range: Literal["reject", "flag"] = "reject"
    command_limits: CommandLimits = Field(default_factory=CommandLimits)
    offline_timeout_s: int = Field(600, ge=1, le=30 * 86400)
    mqtt_rate_per_s: MqttRate = DEFAULT_MQTT_RATE_PER_S
    mqtt_burst: MqttBurst = DEFAULT_MQTT_BURST
    max_payload_bytes: MaxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES
    media_max_bytes: MediaMaxBytes | None = None
    provisioning_enabled: bool = False
    provision_secret: ProvisionSecret | None = Field(None, description="write-only")
    allow_reprovision: bool = False
    analytics: AnalyticsConfig = Field(
        default_factory=AnalyticsConfig, description="advisory analytics: keys watched and how"
    )
    safety_policy: SafetyPolicy | None = Field(
        None, description="the gate on every command to its devices (docs/safety.md); null: none"
    )

    check_keys = field_validator("telemetry_keys")(_unique_keys)

    @model_validator(mode="after")
    def _provisioning(self) -> ProfileIn:
        given = self.provision_secret is not None
        explicit = "provisioning_enabled" in self.model_fields_set
        if given and explicit and not self.provisioning_enabled:
            raise ValueError("provision_secret given with provisioning disabled")
        if given:
            self.provisioning_enabled = True
        return self


class ProfilePatch(BaseModel):
    """PATCH /api/v1/device-profiles/{id}: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    telemetry_keys: list[TelemetryKey] | None = Field(None, max_length=MAX_TELEMETRY_KEYS)
    out_of_range: Literal["reject", "flag"] | None = None
    command_limits: CommandLimits | None = None
    offline_timeout_s: int | None = Field(None, ge=1, le=30 * 86400)
    mqtt_rate_per_s: MqttRate | None = None
    mqtt_burst: MqttBurst | None = None
    max_payload_bytes: MaxPayloadBytes | None = None
    media_max_bytes: MediaMaxBytes | None = Field(None, description="null: the default")
    provisioning_enabled: bool | None = Field(None, description="false clears key and secret")
    provision_secret: ProvisionSecret | None = Field(None, description="write-only")
    allow_reprovision: bool | None = None
    analytics: AnalyticsConfig | None = None
    safety_policy: SafetyPolicy | None = Field(None, description="null removes the policy")

    @field_validator("*", mode="before")
    @classmethod
    def _reject_null(cls, value: Any, info: ValidationInfo) -> Any:
        # Null means "remove" for the safety policy and "the default" for media_max_bytes;
        # every other field is left out.
        return value if info.field_name in NULLABLE_PATCH_FIELDS else not_null(value)

    check_keys = field_validator("telemetry_keys")(_unique_keys)

    @model_validator(mode="after")
    def _provisioning(self) -> ProfilePatch:
        given = {"provision_secret"} & self.model_fields_set
        if given and self.provisioning_enabled is False:
            raise ValueError("provision_secret given with provisioning disabled")
        return self


class ProfileOut(BaseModel):
    """A device profile (never the provisioning secret)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    telemetry_keys: list[dict[str, Any]]
    out_of_range: str
    command_limits: dict[str, Any]
    offline_timeout_s: int
    mqtt_rate_per_s: float
    mqtt_burst: int
    max_payload_bytes: int
    media_max_bytes: int | None
    provisioning_enabled: bool
    provision_key: str | None
    allow_reprovision: bool
    analytics: dict[str, Any]
    safety_policy: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class ProfileSaved(ProfileOut):
    """The answer to a create or update: a generated provisioning secret appears here once."""

    provision_secret: str | None = None
