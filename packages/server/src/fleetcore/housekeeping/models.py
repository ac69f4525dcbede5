"""An organization's own retention days for the tables it may decide (targets.OVERRIDABLE)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, utcnow


class RetentionOverride(Base):
    """Days one organization keeps one table's rows (0 = forever); no row: the default."""

    __tablename__ = "housekeeping_retention"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    table_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
