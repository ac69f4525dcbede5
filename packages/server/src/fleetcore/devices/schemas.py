"""Request and response bodies of devices, their tokens, provisioning and CSV import."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from fleetcore.devices.models import Device

MAX_LABELS = 32
MAX_PROPERTIES_BYTES = 16 * 1024

Label = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
# One line of text: no control characters (PostgreSQL refuses NUL in any text).
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=ONE_LINE)
]
Serial = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=ONE_LINE)
]
SearchText = Annotated[str, StringConstraints(max_length=200, pattern=ONE_LINE)]
Status = Literal["provisioned", "active", "disabled"]
Sort = Literal[
    "name",
    "-name",
    "serial_number",
    "-serial_number",
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
]


def not_null(value: Any) -> Any:
    """A PATCH validator: a field may be left out, but not sent as null."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


class Location(BaseModel):
    """Where a device is (WGS 84)."""

    model_config = ConfigDict(extra="forbid")

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    altitude: float | None = Field(None, ge=-20_000, le=100_000, allow_inf_nan=False)


def _properties(value: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
    except ValueError:
        raise ValueError("NaN and Infinity are not JSON") from None
    if len(encoded.encode()) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    return value


def _unique_labels(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))  # a set, in the order given


class DeviceIn(BaseModel):
    """POST /api/v1/devices."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    serial_number: Serial
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    labels: list[Label] = Field(default_factory=list, max_length=MAX_LABELS)
    properties: dict[str, Any] = Field(default_factory=dict)
    location: Location | None = None

    check_properties = field_validator("properties")(_properties)
    check_labels = field_validator("labels")(_unique_labels)


class DevicePatch(BaseModel):
    """PATCH /api/v1/devices/{id}: only the fields sent change; null clears the nullable ones."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    serial_number: Serial | None = None
    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    labels: list[Label] | None = Field(None, max_length=MAX_LABELS)
    properties: dict[str, Any] | None = None
    location: Location | None = None
    status: Status | None = Field(
        None, description="disabled refuses the token; active or provisioned re-enables"
    )

    reject_null = field_validator(
        "name", "serial_number", "labels", "properties", "status", mode="before"
    )(not_null)
    check_properties = field_validator("properties")(_properties)
    check_labels = field_validator("labels")(_unique_labels)


class DeviceOut(BaseModel):
    """A device (never its token)."""

    id: uuid.UUID
    name: str
    serial_number: str
    status: Status
    profile_id: uuid.UUID | None
    asset_id: uuid.UUID | None
    labels: list[str]
    properties: dict[str, Any]
    location: Location | None
    created_at: datetime
    updated_at: datetime
    last_seen_at: datetime | None
    connectivity: Literal["online", "offline", "never"] = Field(
        description="online or offline by MQTT connection and traffic; never: no traffic yet"
    )
    connectivity_changed_at: datetime | None

    @classmethod
    def of(cls, device: Device) -> DeviceOut:
        """From the row (its labels loaded)."""
        location = None
        if device.latitude is not None and device.longitude is not None:
            location = Location(
                latitude=device.latitude, longitude=device.longitude, altitude=device.altitude
            )
        return cls.model_validate(
            {
                **{name: getattr(device, name) for name in cls.model_fields if name != "location"},
                "location": location,
            }
        )


class DeviceCreated(DeviceOut):
    """The answer to creating a device: the only time its token is shown."""

    access_token: str


class DeviceMe(BaseModel):
    """GET /api/v1/devices/me: what a device may know about itself."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    serial_number: str
    profile_id: uuid.UUID | None
    status: Status


class DeviceToken(BaseModel):
    """A device's new access token, shown once."""

    device_id: uuid.UUID
    access_token: str


# -- provisioning ------------------------------------------------------------------------


class ProvisionIn(BaseModel):
    """POST /api/v1/provision: a device registers itself with its profile's credentials."""

    provision_key: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ONE_LINE)]
    provision_secret: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=ONE_LINE)
    ]
    serial_number: Serial
    name: Name | None = Field(None, description="defaults to the serial number")


class FieldError(BaseModel):
    """Why one field of an imported row was refused."""

    field: str
    message: str


class ImportRow(BaseModel):
    """The outcome of one CSV row (row 1 is the header)."""

    row: int
    status: Literal["created", "error"]
    serial_number: str | None = None
    device_id: uuid.UUID | None = None
    access_token: str | None = None
    errors: list[FieldError] | None = None


class ImportResult(BaseModel):
    """POST /api/v1/devices/import."""

    created: int
    failed: int
    rows: list[ImportRow]
