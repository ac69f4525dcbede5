"""The OTA tables: signing keys, packages, rollouts and each device's part in a rollout."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class OtaKey(Base):
    """An Ed25519 public key of an organization: with one, every upload must be signed."""

    __tablename__ = "ota_keys"
    __table_args__ = (UniqueConstraint("organization_id", "public_key"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[str] = mapped_column(String(64))  # the raw 32 bytes, base64
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OtaPackage(Base):
    """A firmware or software package; its bytes are in the OTA store, in parts."""

    __tablename__ = "ota_packages"
    __table_args__ = (
        UniqueConstraint("organization_id", "kind", "title", "version"),
        Index("ix_ota_packages_organization_id_created_at", "organization_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(16))  # firmware | software
    title: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("device_profiles.id", ondelete="SET NULL"), nullable=True
    )
    file_name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str | None] = mapped_column(String(128), nullable=True)  # base64
    key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ota_keys.id", ondelete="SET NULL"), nullable=True
    )
    storage_prefix: Mapped[str] = mapped_column(String(256))
    part_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutStatus:
    """A rollout's life: active, paused (by hand or by the failure limit), then an end."""

    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    OPEN = (ACTIVE, PAUSED)


class DeviceState:
    """A device's update: pending (a later stage), then what it reports."""

    PENDING = "pending"
    QUEUED = "queued"
    DOWNLOADING = "downloading"
    DOWNLOADED = "downloaded"
    VERIFYING = "verifying"
    UPDATING = "updating"
    UPDATED = "updated"
    FAILED = "failed"
    CANCELLED = "cancelled"  # aborted before it finished
    ROLLED_BACK = "rolled_back"
    ALL = (
        PENDING,
        QUEUED,
        DOWNLOADING,
        DOWNLOADED,
        VERIFYING,
        UPDATING,
        UPDATED,
        FAILED,
        CANCELLED,
        ROLLED_BACK,
    )
    IN_FLIGHT = (QUEUED, DOWNLOADING, DOWNLOADED, VERIFYING, UPDATING)
    # What a device may still report over: UPDATED too (a FAILED after updating counts).
    REPORTABLE = (*IN_FLIGHT, UPDATED, FAILED)


class OtaRollout(Base):
    """A package assigned to a set of devices, all at once or in stages."""

    __tablename__ = "ota_rollouts"
    __table_args__ = (
        Index("ix_ota_rollouts_organization_id_created_at", "organization_id", "created_at"),
        Index("ix_ota_rollouts_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # RESTRICT: a package is never deleted under a rollout (the service says 409 first).
    package_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ota_packages.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    target: Mapped[dict[str, Any]] = mapped_column(JSON)
    strategy: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage_sizes: Mapped[list[int]] = mapped_column(JSON)  # devices per stage
    max_failure_rate: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), default=RolloutStatus.ACTIVE)
    paused_reason: Mapped[str | None] = mapped_column(String(256), nullable=True)
    current_stage: Mapped[int] = mapped_column(Integer, default=0)
    # Failures seen when it was last resumed: the automatic pause waits for a new one.
    failures_acknowledged: Mapped[int] = mapped_column(Integer, default=0)
    stage_done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OtaRolloutDevice(Base):
    """One device's update within a rollout, and what it had before (for a rollback)."""

    __tablename__ = "ota_rollout_devices"
    __table_args__ = (
        Index("ix_ota_rollout_devices_device_id", "device_id"),
        Index("ix_ota_rollout_devices_rollout_id_state", "rollout_id", "state"),
        # One open rollout per device and kind, whatever races (migration 0033).
        Index(
            "ux_ota_rollout_devices_open",
            "device_id",
            "open_kind",
            unique=True,
            postgresql_where=text("open_kind IS NOT NULL"),
            sqlite_where=text("open_kind IS NOT NULL"),
        ),
    )

    rollout_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ota_rollouts.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    stage: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=DeviceState.PENDING)
    error: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The client scope's version when assigned: a state reported before it is stale.
    baseline: Mapped[int] = mapped_column(BigInteger, default=0)
    # The shared fw_*/sw_* keys before the assignment, and the version the device reported.
    previous: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    previous_title: Mapped[str | None] = mapped_column(String(128), nullable=True)
    previous_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The package kind while the rollout is open, NULL once it ended (rollouts.release).
    open_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
