"""Tables of the device registry: profiles, devices, labels, credentials."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fleetcore.db import Base, UTCDateTime, new_id, utcnow

DEFAULT_MQTT_RATE_PER_S = 50.0
DEFAULT_MQTT_BURST = 200
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024

# Execution option of a bulk UPDATE of devices that cannot change who may authenticate
# (presence, last seen, provisioned -> active): without it every connectivity change would
# clear every device auth cache and make the embedded broker re-check all its sessions.
CREDENTIALS_UNCHANGED = "fleetcore_credentials_unchanged"


class DeviceProfile(Base):
    """What a kind of device reports and may be told: keys, ranges, limits, timeouts."""

    __tablename__ = "device_profiles"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # [{"key", "type": number|string|boolean|json, "unit", "min", "max"}]
    telemetry_keys: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    out_of_range: Mapped[str] = mapped_column(String(8), default="reject")  # reject | flag
    # {"<method>": {"<param>": {"min", "max", "allowed": [...]}}}
    command_limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offline_timeout_s: Mapped[int] = mapped_column(Integer, default=600)
    # Advisory analytics: which keys are watched and how (fleetcore.analytics.config).
    analytics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # The control side's gate on every command to its devices (fleetcore.safety.policy);
    # None: no gate beyond command_limits.
    safety_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # MQTT limits per device: a token bucket (sustained rate, burst) and the largest payload.
    mqtt_rate_per_s: Mapped[float] = mapped_column(
        Float, default=DEFAULT_MQTT_RATE_PER_S, server_default=text("50.0")
    )
    mqtt_burst: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_MQTT_BURST, server_default=text("200")
    )
    max_payload_bytes: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_MAX_PAYLOAD_BYTES, server_default=text("65536")
    )
    # The largest attachment (an image) its devices may send; None: the platform default.
    media_max_bytes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    provision_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    provision_secret_hash: Mapped[str | None] = mapped_column(String(64))
    allow_reprovision: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def provisioning_enabled(self) -> bool:
        """True if devices may provision themselves with this profile's key and secret."""
        return self.provision_key is not None


class DeviceStatus:
    """The values of Device.status."""

    PROVISIONED = "provisioned"  # registered, its token never used yet
    ACTIVE = "active"  # has authenticated with its token at least once
    DISABLED = "disabled"  # its token is refused until re-enabled


class Device(Base):
    """A registered device; soft-deleted rows keep their history but free their serial."""

    __tablename__ = "devices"
    __table_args__ = (
        # Unique among live devices only, so a deleted device's serial can be reused.
        Index(
            "uq_devices_organization_id_serial_number",
            "organization_id",
            "serial_number",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_devices_organization_id_created_at", "organization_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("device_profiles.id", ondelete="RESTRICT"), index=True
    )
    asset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assets.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    serial_number: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default=DeviceStatus.PROVISIONED)
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    altitude: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # online | offline | never (no traffic yet); written only by fleetcore.status.presence
    connectivity: Mapped[str] = mapped_column(
        String(8), default="never", server_default=text("'never'")
    )
    connectivity_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Loaded with every device (one extra SELECT ... IN per query), so any code can show them.
    label_rows: Mapped[list[DeviceLabel]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin"
    )
    # Never loaded implicitly: only new devices get their first credential through it.
    credentials: Mapped[list[DeviceCredential]] = relationship(
        cascade="save-update", passive_deletes=True, lazy="raise"
    )

    @property
    def labels(self) -> list[str]:
        """The device's labels, sorted."""
        return sorted(row.label for row in self.label_rows)


class DeviceLabel(Base):
    """A label on a device (a row each, so filtering by label is an index lookup)."""

    __tablename__ = "device_labels"
    __table_args__ = (Index("ix_device_labels_label", "label"),)

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String(64), primary_key=True)


class DeviceCredential(Base):
    """A device access token's hash; rotation revokes the old one at once."""

    __tablename__ = "device_credentials"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
