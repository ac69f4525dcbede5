"""Alerts (one open per rule and device) and their comments."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow

_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")
_OPEN = text("status != 'cleared'")


class AlertStatus(StrEnum):
    """active -> acknowledged -> cleared (or active -> cleared)."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"


class Severity(StrEnum):
    """From most to least urgent."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"
    INFO = "info"


OPEN_STATUSES = (AlertStatus.ACTIVE, AlertStatus.ACKNOWLEDGED)


class Alert(Base):
    """A rule that fired on a device, from opening to clearing."""

    __tablename__ = "alerts"
    __table_args__ = (
        # The database itself keeps one open alert per rule and device.
        Index(
            "uq_alerts_rule_id_device_id_open",
            "rule_id",
            "device_id",
            unique=True,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        ),
        Index("ix_alerts_organization_id_opened_at", "organization_id", "opened_at"),
        Index(
            "ix_alerts_organization_id_status_opened_at", "organization_id", "status", "opened_at"
        ),
        Index("ix_alerts_device_id_opened_at", "device_id", "opened_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    rule_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("rules.id", ondelete="SET NULL"))
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))  # the rule's name when it opened
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.ACTIVE)
    count: Mapped[int] = mapped_column(Integer, default=1)  # times the rule fired while open
    details: Mapped[dict[str, Any]] = mapped_column(_JSON, default=dict)  # values that fired it
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the reading's time
    last_fired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cleared_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # condition | manual | rule_disabled | rule_deleted
    clear_reason: Mapped[str | None] = mapped_column(String(16))
    assignee_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class AlertComment(Base):
    """A note on an alert by a user."""

    __tablename__ = "alert_comments"
    __table_args__ = (Index("ix_alert_comments_alert_id_created_at", "alert_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    alert_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"))
    author_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
