"""OTA API bodies: keys, packages, rollouts and their progress."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["firmware", "software"]
TITLE = r"^[A-Za-z0-9][A-Za-z0-9 ._+:-]{0,127}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._+:-]{0,63}$"
MAX_DEVICE_IDS = 10_000
MAX_STAGES = 20


class KeyIn(BaseModel):
    """An Ed25519 public key: PEM or the raw 32 bytes in base64."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    public_key: str = Field(min_length=40, max_length=2000)


class KeyOut(BaseModel):
    """A registered key (raw, base64)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    public_key: str
    created_at: datetime


class PackageMeta(BaseModel):
    """The upload's fields beside the file."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(pattern=TITLE)
    version: str = Field(pattern=VERSION)
    kind: Kind
    profile_id: uuid.UUID | None = None
    signature: str | None = Field(None, min_length=1, max_length=200)


class PackageOut(BaseModel):
    """A stored package."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: Kind
    title: str
    version: str
    profile_id: uuid.UUID | None
    file_name: str
    size: int
    checksum: str = Field(validation_alias="sha256")
    checksum_algorithm: Literal["SHA256"] = "SHA256"
    signature: str | None
    signature_alg: str | None = None
    key_id: uuid.UUID | None
    created_at: datetime

    @model_validator(mode="after")
    def _alg(self) -> PackageOut:
        if self.signature is not None:
            self.signature_alg = "ed25519"
        return self


class Target(BaseModel):
    """Which devices: exactly one of a profile, an asset's subtree, labels (all of them),
    or a list of device ids."""

    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID | None = None
    asset_id: uuid.UUID | None = None
    labels: Annotated[list[str], Field(max_length=20)] | None = None
    device_ids: Annotated[list[uuid.UUID], Field(max_length=MAX_DEVICE_IDS)] | None = None

    @model_validator(mode="after")
    def _one(self) -> Target:
        given = [
            name
            for name in ("profile_id", "asset_id", "labels", "device_ids")
            if getattr(self, name) not in (None, [])
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of profile_id, asset_id, labels, device_ids")
        return self


class Strategy(BaseModel):
    """all: every device at once. staged: stages of percentages (cumulative, ending at 100)
    or of batch sizes (the last repeats until every device has a stage), with a pause
    between a stage's end and the next."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["all", "staged"] = "all"
    stages: Annotated[list[int], Field(max_length=MAX_STAGES)] = []
    unit: Literal["percent", "devices"] = "percent"
    pause_s: int = Field(0, ge=0, le=30 * 86400)

    @field_validator("stages")
    @classmethod
    def _positive(cls, stages: list[int]) -> list[int]:
        if any(size < 1 for size in stages):
            raise ValueError("every stage is at least 1")
        return stages

    @model_validator(mode="after")
    def _stages(self) -> Strategy:
        if self.type == "staged":
            if not self.stages:
                raise ValueError("a staged rollout needs stages")
            if self.unit == "percent" and (
                self.stages != sorted(set(self.stages)) or self.stages[-1] != 100
            ):
                raise ValueError("percent stages rise and end at 100")
        return self


class RolloutIn(BaseModel):
    """A new rollout."""

    model_config = ConfigDict(extra="forbid")

    package_id: uuid.UUID
    name: str | None = Field(None, max_length=128)
    target: Target
    strategy: Strategy = Strategy()
    max_failure_rate: float = Field(1.0, ge=0.0, le=1.0)


class StageOut(BaseModel):
    """One stage: its devices by state."""

    stage: int
    devices: int
    counts: dict[str, int]


class RolloutOut(BaseModel):
    """A rollout with its counts (overall and per stage)."""

    id: uuid.UUID
    name: str
    package_id: uuid.UUID
    kind: Kind
    title: str
    version: str
    target: dict[str, object]
    strategy: dict[str, object]
    max_failure_rate: float
    status: str
    paused_reason: str | None
    current_stage: int
    devices: int
    counts: dict[str, int]
    failure_rate: float
    stages: list[StageOut]
    created_at: datetime
    updated_at: datetime


class RolloutDeviceOut(BaseModel):
    """One device's update in a rollout."""

    model_config = ConfigDict(from_attributes=True)

    device_id: uuid.UUID
    stage: int
    state: str
    error: str | None
    previous_title: str | None
    previous_version: str | None
    assigned_at: datetime | None
    updated_at: datetime
