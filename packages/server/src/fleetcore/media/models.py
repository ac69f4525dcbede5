"""The media tables: one row per stored file, and each organization's media retention."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class MediaStatus:
    """pending: an upload URL was issued, no bytes yet; ready: stored and checked."""

    PENDING = "pending"
    READY = "ready"


class Media(Base):
    """A file a device sent (an image, its thumbnail beside it), owned by the device's
    organization. The id is random: it is never a guessable public address (media are served
    through the API to the organization's users, or by a short-lived signed URL)."""

    __tablename__ = "media"
    __table_args__ = (
        Index("ix_media_organization_id_created_at", "organization_id", "created_at"),
        Index("ix_media_device_id_created_at", "device_id", "created_at"),
        Index("ix_media_event_id", "event_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    # The event that owns it; None until attached (an upload not yet referred to).
    event_id: Mapped[int | None] = mapped_column(
        ForeignKey("device_events.id", ondelete="SET NULL"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default=MediaStatus.READY)
    content_type: Mapped[str] = mapped_column(String(64))  # from the bytes, never the header
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    storage_key: Mapped[str] = mapped_column(String(256))
    thumb_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    thumb_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attached_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A pending upload's URL stops working then; an unattached file is removed after it.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class MediaPolicy(Base):
    """An organization's media retention, apart from its telemetry's (None: the default)."""

    __tablename__ = "media_policies"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    retention_days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
