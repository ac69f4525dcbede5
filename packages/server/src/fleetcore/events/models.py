"""The device event table: discrete things a device reports (door opened, fault, reboot)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, utcnow

SEVERITIES = ("critical", "major", "minor", "warning", "info")


class DeviceEvent(Base):
    """One event of one device at the time the device gives (or when it arrived)."""

    __tablename__ = "device_events"
    __table_args__ = (Index("ix_device_events_device_id_ts", "device_id", "ts"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    type: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16), default="info")
    data: Mapped[dict[str, Any]] = mapped_column(
        JSON().with_variant(postgresql.JSONB(), "postgresql"), default=dict
    )
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
