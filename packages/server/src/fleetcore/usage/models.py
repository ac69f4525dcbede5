"""Usage tables: counters per organization and UTC day, their monthly roll-up, active devices,
and the ids of the flushes that committed.

No foreign key to organizations on purpose: a meter may flush counts of an organization
deleted a moment ago, and one such row must not fail the whole flush (every organization's
deltas go in one statement). Rows of a deleted organization are only ever read by a superuser.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime


class UsageDaily(Base):
    """One counter (or a day's level) of one organization for one UTC day."""

    __tablename__ = "usage_daily"
    # The roll-up and the meter's refresh read one day (or days) across organizations.
    __table_args__ = (Index("ix_usage_daily_day", "day"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    transport: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    n: Mapped[int] = mapped_column(BigInteger)


class UsageMonthly(Base):
    """Days older than the daily retention, rolled up: `month` is the month's first day."""

    __tablename__ = "usage_monthly"

    organization_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    transport: Mapped[str] = mapped_column(String(32), primary_key=True, default="")
    n: Mapped[int] = mapped_column(BigInteger)


class UsageDeviceDay(Base):
    """A device sent something on this UTC day (devices active = the day's rows)."""

    __tablename__ = "usage_device_days"
    __table_args__ = (Index("ix_usage_device_days_day", "day"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    device_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)


class UsageFlush(Base):
    """A meter's flush that committed, written in the flush's own transaction: a flush retried
    after an error whose outcome was unknown finds its id here and adds nothing (meter.py)."""

    __tablename__ = "usage_flushes"
    # The roll-up job prunes old ids by age.
    __table_args__ = (Index("ix_usage_flushes_at", "at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
