"""Request and response bodies of device commands."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from fleetcore.commands.models import CommandStatus

MAX_PARAMS_BYTES = 16 * 1024
MAX_TIMEOUT_S = 86_400

Method = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class CommandIn(BaseModel):
    """POST /api/v1/devices/{id}/commands."""

    model_config = ConfigDict(extra="forbid")

    method: Method
    params: dict[str, Any] = Field(default_factory=dict, description="a JSON object, ≤16 KiB")
    timeout_s: int = Field(
        30, ge=1, le=MAX_TIMEOUT_S, description="seconds from creation until it expires"
    )
    persistent: bool = Field(
        False, description="wait (queued) for an offline device instead of failing at once"
    )

    @field_validator("params")
    @classmethod
    def _small(cls, params: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(orjson.dumps(params))
        except orjson.JSONEncodeError as exc:
            raise ValueError(f"params must be plain JSON: {exc}") from None
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params take {size} bytes of JSON; at most {MAX_PARAMS_BYTES}")
        return params


class CommandOut(BaseModel):
    """A command and the time it reached each state (null if it did not)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: uuid.UUID
    method: str
    params: dict[str, Any]
    persistent: bool
    timeout_s: int
    status: CommandStatus
    result: Any = None
    error: str | None = None
    channel: str | None = Field(None, description="mqtt, thingsboard, http or thingsboard_http")
    rpc_id: int = Field(description="the ThingsBoard RPC request id")
    created_at: datetime
    expires_at: datetime
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    completed_at: datetime | None = Field(None, description="when it succeeded or failed")
    expired_at: datetime | None = None
    cancelled_at: datetime | None = None


class CommandResultIn(BaseModel):
    """What a device answers: succeeded with a result, or failed with an error."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed"]
    result: Any = None
    error: Annotated[str, StringConstraints(max_length=1000)] | None = None


class DeviceCommandOut(BaseModel):
    """A command as a device receives it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    method: str
    params: dict[str, Any]


class PolledCommands(BaseModel):
    """GET /api/v1/devices/me/commands: the commands now delivered (oldest first)."""

    commands: list[DeviceCommandOut]


class ThingsBoardRpc(BaseModel):
    """GET /api/v1/{token}/rpc: one server-side RPC as ThingsBoard sends it."""

    id: int
    method: str
    params: dict[str, Any]


class ResultAccepted(BaseModel):
    """The answer to a device's result."""

    id: uuid.UUID
    status: CommandStatus
