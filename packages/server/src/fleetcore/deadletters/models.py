"""The dead-letter table: device payloads that could not be used, kept for diagnosis."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, utcnow

MAX_TOPIC = 512
MAX_REASON = 32
MAX_DETAIL = 2000
EXCERPT_BYTES = 1024


class DeadLetter(Base):
    """One refused payload: where it came from, why it was refused, and how it began."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_organization_id_received_at", "organization_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # None when the sender was never authenticated (no organization to show it to).
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("devices.id", ondelete="SET NULL"), index=True
    )
    transport: Mapped[str] = mapped_column(String(8))  # mqtt | http
    topic: Mapped[str | None] = mapped_column(String(MAX_TOPIC))
    reason: Mapped[str] = mapped_column(String(MAX_REASON))  # bad_json, oversize, ...
    detail: Mapped[str] = mapped_column(String(MAX_DETAIL))
    payload_excerpt: Mapped[str] = mapped_column(Text)  # first EXCERPT_BYTES, decoded leniently
    payload_size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
