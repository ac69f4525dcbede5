"""Attribute bodies: limits on the key → value objects written, and the responses."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from fleetcore.errors import Invalid

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_VALUE_BYTES = 8 * 1024
MAX_KEYS = 500


def canonical_json(value: Any) -> str:
    """One spelling per JSON value, so 1, 1.0 and true never compare equal by accident."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def check_values(values: dict[str, Any]) -> None:
    """Invalid (422, naming the key) for a bad key or a value not JSON or over the size limit."""
    for key, value in values.items():
        if not KEY_PATTERN.fullmatch(key):
            raise Invalid(
                f"attribute key {key!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -",
                code="ATTRIBUTE_KEY_INVALID",
                details={"key": key},
            )
        if value is None:
            continue
        try:
            size = len(canonical_json(value).encode())
        except (ValueError, TypeError, RecursionError):
            raise Invalid(
                f"attribute {key!r} is not a JSON value (NaN and Infinity are not)",
                code="ATTRIBUTE_VALUE_INVALID",
                details={"key": key},
            ) from None
        if size > MAX_VALUE_BYTES:
            raise Invalid(
                f"attribute {key!r} is {size} bytes of JSON; at most {MAX_VALUE_BYTES}",
                code="ATTRIBUTE_VALUE_TOO_LARGE",
                details={"key": key, "size": size, "max_bytes": MAX_VALUE_BYTES},
            )


class AttributeScope(StrEnum):
    """Who writes a device's attributes: users (server, shared) or the device (client)."""

    SERVER = "server"
    SHARED = "shared"
    CLIENT = "client"


class AttributeOut(BaseModel):
    """One attribute and the scope version it last changed at."""

    model_config = ConfigDict(from_attributes=True)

    key: str
    value: Any
    version: int
    updated_at: datetime


class ScopeOut(BaseModel):
    """One scope of a device's attributes."""

    device_id: uuid.UUID
    scope: AttributeScope
    version: int = Field(description="increments on every change of this scope's set")
    values: dict[str, Any]
    attributes: list[AttributeOut]


class SyncState(BaseModel):
    """A shared (desired) key against what the device reported in its client scope."""

    key: str
    desired: Any
    reported: Any
    in_sync: bool


class DeviceAttributesOut(BaseModel):
    """Every scope of a device, and how far the reported state is from the desired one."""

    device_id: uuid.UUID
    server: dict[str, Any]
    shared: dict[str, Any]
    client: dict[str, Any]
    shared_version: int
    desired_vs_reported: list[SyncState]


class DesiredOut(BaseModel):
    """What a device should apply: its shared attributes and their version."""

    device_id: uuid.UUID
    shared: dict[str, Any]
    shared_version: int
