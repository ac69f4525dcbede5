"""The device command table: one row per command, a timestamp per state it reached."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class CommandStatus(StrEnum):
    """queued -> sent -> delivered -> succeeded | failed; expired or cancelled on the way."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


OPEN = (CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.DELIVERED)
CANCELLABLE = (CommandStatus.QUEUED, CommandStatus.SENT)

_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")


class DeviceCommand(Base):
    """A command to one device; `rpc_id` is its ThingsBoard request id (per device)."""

    __tablename__ = "device_commands"
    __table_args__ = (
        UniqueConstraint("device_id", "rpc_id"),
        Index("ix_device_commands_device_id_created_at", "device_id", "created_at"),
        Index(
            "ix_device_commands_device_id_status_created_at", "device_id", "status", "created_at"
        ),
        Index("ix_device_commands_status_expires_at", "status", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    rpc_id: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_s: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=CommandStatus.QUEUED)
    # How it went out: mqtt (native topic), thingsboard (MQTT RPC), http, thingsboard_http.
    channel: Mapped[str | None] = mapped_column(String(16))
    result: Mapped[Any] = mapped_column(_JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)  # created_at + timeout_s
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # succeeded or failed
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
