"""The broker credential outbox: a device's credential change, staged with the change."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, utcnow


class BrokerCredentialOutbox(Base):
    """One change to apply to the broker; pending while `done_at` is NULL.

    The id orders a device's rows (they are applied in that order, one at a time).
    `secret` holds the new token encrypted (outbox.SecretBox) until the row is applied.
    `lease_until` keeps a row to the one dispatcher applying it (several processes may run).
    """

    __tablename__ = "broker_credential_outbox"
    __table_args__ = (
        Index("ix_broker_credential_outbox_pending", "done_at", "next_attempt_at"),
        Index("ix_broker_credential_outbox_device_id_id", "device_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # No foreign key: a delete row outlives the device row it is about.
    device_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    action: Mapped[str] = mapped_column(String(16))  # upsert | disable | enable | delete
    secret: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
