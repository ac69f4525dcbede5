"""Every online/offline transition of a device, in order."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, utcnow


class DeviceStatusChange(Base):
    """One transition: online or offline, why, and when."""

    __tablename__ = "device_status_history"
    __table_args__ = (Index("ix_device_status_history_device_id_id", "device_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(8))  # online | offline
    # connect | disconnect | will | traffic | timeout
    reason: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
