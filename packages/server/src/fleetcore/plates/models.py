"""The plate tables: each read, visits (reads of one plate on one camera close together),
the organization's distinct plates with their fuzzy-search keys, and watchlists."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, new_id, utcnow

_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")
MAX_PLATE = 32  # normalised forms; the text as read is at most 20 characters


class Plate(Base):
    """One distinct plate of an organization, by its matching key (plate_key): however the
    reads spelled it (O or 0, spaces), its reads and visits are counted here."""

    __tablename__ = "plates"
    __table_args__ = (
        UniqueConstraint("organization_id", "plate_key"),
        Index("ix_plates_organization_id_last_seen", "organization_id", "last_seen"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    plate_key: Mapped[str] = mapped_column(String(MAX_PLATE))
    plate_norm: Mapped[str] = mapped_column(String(MAX_PLATE))  # as last read, normalised
    plate: Mapped[str] = mapped_column(String(MAX_PLATE))  # display text, as last read
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    reads: Mapped[int] = mapped_column(Integer, default=0)
    visits: Mapped[int] = mapped_column(Integer, default=0)


class PlateNeighbour(Base):
    """A plate's deletion neighbourhood (SymSpell): its key and its key with each one
    character deleted. Two keys within edit distance 1 share at least one of these, so a
    fuzzy search is an indexed lookup of the query's neighbourhood, then a check of the true
    distance in Python."""

    __tablename__ = "plate_neighbours"
    __table_args__ = (Index("ix_plate_neighbours_organization_id_nkey", "organization_id", "nkey"),)

    plate_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("plates.id", ondelete="CASCADE"),
        primary_key=True,
    )
    nkey: Mapped[str] = mapped_column(String(MAX_PLATE), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )


class PlateVisit(Base):
    """Reads of one plate on one camera with no gap longer than the visit window: one
    vehicle passing (or parked in view), counted once and alerted on once."""

    __tablename__ = "plate_visits"
    __table_args__ = (
        # The open visit of a plate on a camera: the hook's lookup.
        Index("ix_plate_visits_device_id_plate_key_last_ts", "device_id", "plate_key", "last_ts"),
        Index("ix_plate_visits_organization_id_first_ts", "organization_id", "first_ts"),
        Index("ix_plate_visits_plate_id_first_ts", "plate_id", "first_ts"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    camera: Mapped[str] = mapped_column(String(64), default="")  # "" when the read names none
    plate_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("plates.id", ondelete="CASCADE"),
    )
    plate_key: Mapped[str] = mapped_column(String(MAX_PLATE))
    plate_norm: Mapped[str] = mapped_column(String(MAX_PLATE))
    first_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    last_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    reads: Mapped[int] = mapped_column(Integer, default=1)
    best_confidence: Mapped[float] = mapped_column(Float)
    best_read_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class PlateRead(Base):
    """One plate read by a camera device (from a plate_read event)."""

    __tablename__ = "plate_reads"
    __table_args__ = (
        Index("ix_plate_reads_organization_id_ts", "organization_id", "ts"),
        Index("ix_plate_reads_organization_id_plate_key_ts", "organization_id", "plate_key", "ts"),
        Index("ix_plate_reads_device_id_ts", "device_id", "ts"),
        Index("ix_plate_reads_visit_id", "visit_id"),
        Index("ix_plate_reads_media_id", "media_id"),
        Index("ix_plate_reads_event_id", "event_id"),
        # A camera's own id for a read: sent again (its answer lost), it is a duplicate.
        Index("uq_plate_reads_device_id_read_id", "device_id", "read_id", unique=True),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    camera: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Event retention may delete the event; the read stays.
    event_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("device_events.id", ondelete="SET NULL"),
        nullable=True,
    )
    ts: Mapped[datetime] = mapped_column(UTCDateTime)
    plate: Mapped[str] = mapped_column(String(MAX_PLATE))  # as read
    plate_norm: Mapped[str] = mapped_column(String(MAX_PLATE))
    plate_key: Mapped[str] = mapped_column(String(MAX_PLATE))
    region: Mapped[str | None] = mapped_column(String(64), nullable=True)
    confidence: Mapped[float] = mapped_column(Float)
    direction: Mapped[str | None] = mapped_column(String(3), nullable=True)  # in | out
    lane: Mapped[int | None] = mapped_column(SmallInteger, nullable=True)
    vehicle_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    vehicle_color: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bbox: Mapped[list[int] | None] = mapped_column(_JSON, nullable=True)  # [x, y, w, h]
    # Media retention deletes images; the read stays, without its picture.
    media_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("media.id", ondelete="SET NULL"), nullable=True
    )
    visit_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("plate_visits.id", ondelete="CASCADE"),
    )
    read_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the camera's
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Watchlist(Base):
    """A list of plates that raise an alert when read. Backed by a rule (rule_id) that the
    rules engine does not evaluate, so alerts, acknowledgement and notifications are the
    alerts module's."""

    __tablename__ = "watchlists"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    severity: Mapped[str] = mapped_column(String(16), default="major")
    min_confidence: Mapped[float] = mapped_column(Float, default=0.8)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    rule_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("rules.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class WatchlistEntry(Base):
    """A plate on a watchlist, as typed, with its matching key (one entry per key)."""

    __tablename__ = "watchlist_entries"
    __table_args__ = (
        UniqueConstraint("watchlist_id", "plate_key"),
        Index("ix_watchlist_entries_organization_id_plate_key", "organization_id", "plate_key"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    watchlist_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("watchlists.id", ondelete="CASCADE"))
    plate: Mapped[str] = mapped_column(String(MAX_PLATE))
    plate_key: Mapped[str] = mapped_column(String(MAX_PLATE))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
