"""The archive records: which organization-day is archived, how many readings, and where.

The manifest in the store is what readers trust; this row is what retention and restore
consult without listing the store. Two timestamps order the only two writers of a day:
`stale_at` (set by a re-archive before it touches the store, or by retention when the raw
row count no longer matches) and `purged_at` (set by retention before it deletes the raw
readings). Each is set by a compare-and-set UPDATE, so a day is never re-archived while its
raw readings are being deleted, nor deleted while it is being re-archived.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, utcnow


class TelemetryArchive(Base):
    """One organization's archived day."""

    __tablename__ = "ts_archives"
    __table_args__ = (UniqueConstraint("organization_id", "day"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    day: Mapped[date] = mapped_column(Date)
    rows: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    min_ts: Mapped[int | None] = mapped_column(BigInteger)
    max_ts: Mapped[int | None] = mapped_column(BigInteger)
    store: Mapped[str] = mapped_column(String(16))  # file or s3
    location: Mapped[str] = mapped_column(String(256))  # the day's prefix in the store
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stale_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
