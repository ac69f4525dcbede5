"""Alert rules and their per-device evaluation state."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow

_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Rule(Base):
    """A condition on a device, every device of a profile, or every device under an asset."""

    __tablename__ = "rules"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # Exactly one scope is set (checked by the service).
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("device_profiles.id", ondelete="CASCADE"), index=True
    )
    asset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assets.id", ondelete="CASCADE"), index=True
    )
    condition: Mapped[dict[str, Any]] = mapped_column(_JSON)
    duration_s: Mapped[int] = mapped_column(Integer, default=0)
    clear_condition: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    severity: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# Conditions of rules another module owns and fires itself (a plate watchlist's alerts come
# from plate reads, not telemetry): the engine skips them, and users change them only through
# their owner (the rules API and pages show them read-only).
MANAGED_TYPES = frozenset({"watchlist"})


def managed_by(rule: Rule) -> str | None:
    """The owner kind of a rule another module manages ("watchlist"), or None."""
    kind = rule.condition.get("type") if isinstance(rule.condition, dict) else None
    return kind if kind in MANAGED_TYPES else None


class RuleState(Base):
    """Where a rule's evaluation on one device stands; absent means idle. Kept so that a
    restart continues a pending duration and never reopens an open alert."""

    __tablename__ = "rule_states"

    rule_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    pending_since: Mapped[int | None] = mapped_column(BigInteger)  # epoch ms
    latched: Mapped[bool] = mapped_column(Boolean, default=False)
    alert_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
