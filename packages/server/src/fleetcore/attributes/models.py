"""Tables of device attributes and their per-scope version counters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, utcnow

SCOPE_CHECK = "scope IN ('server', 'shared', 'client')"


class DeviceAttribute(Base):
    """One key of one scope of a device; `version` is the scope version it last changed at."""

    __tablename__ = "device_attributes"
    __table_args__ = (CheckConstraint(SCOPE_CHECK, name="scope"),)

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=False)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DeviceAttributeVersion(Base):
    """How many times a device's scope has changed; the shared one is the desired-state version."""

    __tablename__ = "device_attribute_versions"
    __table_args__ = (CheckConstraint(SCOPE_CHECK, name="scope"),)

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
