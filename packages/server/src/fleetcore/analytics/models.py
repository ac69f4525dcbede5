"""What analytics keeps: each watched series' detector and wear state, the findings, each
device's health, and the recommendations waiting for a person.

Series state is a snapshot: the engine flushes it periodically and, after a restart, replays
the readings stored since `last_ts` (the telemetry tables are the log), so nothing is judged
twice or skipped. Findings are append-only. A recommendation is a proposal: only the advisory
service (fleetcore.advisory) may turn an approved one into a command, through the commands
service and its safety gate; nothing here can.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, new_id, utcnow

_JSON = JSON().with_variant(postgresql.JSONB(), "postgresql")


class AnalyticsSeries(Base):
    """One watched series (device, key): its detector state, wear state and how far it got."""

    __tablename__ = "analytics_series"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    detector: Mapped[dict[str, Any]] = mapped_column(_JSON)
    wear: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    # The latest reading judged (epoch ms): replay after a restart starts after it.
    last_ts: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AnalyticsFinding(Base):
    """One anomaly on one series, with its method, score, expected band and evidence."""

    __tablename__ = "analytics_findings"
    __table_args__ = (
        Index("ix_analytics_findings_org_ts", "organization_id", "ts"),
        Index("ix_analytics_findings_device_ts", "device_id", "ts"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    ts: Mapped[int] = mapped_column(BigInteger)  # epoch ms of the reading that completed it
    score: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    expected_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    expected_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    evidence: Mapped[list[list[float]]] = mapped_column(_JSON)  # [[ts, value], ...]
    explanation: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DeviceHealth(Base):
    """A device's latest health: score 0..1, trend, contributors and wear estimates."""

    __tablename__ = "analytics_health"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[float] = mapped_column(Float)
    score_day_ago: Mapped[float] = mapped_column(Float)
    trend: Mapped[str] = mapped_column(String(16))
    contributors: Mapped[list[dict[str, Any]]] = mapped_column(_JSON)
    wear: Mapped[dict[str, Any]] = mapped_column(_JSON)  # key -> estimate (see engine)
    open_findings: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecommendationStatus:
    """The values of Recommendation.status."""

    PROPOSED = "proposed"  # waiting for people
    APPROVED = "approved"  # approved and its command created (or nothing to send: inspect)
    REJECTED = "rejected"  # a person said no
    EXECUTED = "executed"  # its command succeeded (inspect: marked done by a person)
    FAILED = "failed"  # its command failed, expired or was cancelled
    EXPIRED = "expired"  # nobody decided before expires_at

    OPEN = frozenset({PROPOSED})
    ALL = (PROPOSED, APPROVED, REJECTED, EXECUTED, FAILED, EXPIRED)


class RecommendationKind:
    """What a recommendation proposes."""

    INSPECT = "inspect"  # look at the machine: no command
    ADJUST_SETPOINT = "adjust_setpoint"
    REDUCE_SPEED = "reduce_speed"
    SCHEDULE_MAINTENANCE = "schedule_maintenance"
    STOP = "stop"

    ALL = (INSPECT, ADJUST_SETPOINT, REDUCE_SPEED, SCHEDULE_MAINTENANCE, STOP)


class Recommendation(Base):
    """A proposed action with its evidence; `method`/`params` are None for an inspection.

    `topic` names what it is about ("wear:vibration_rms", "range:temperature"): while one
    recommendation on a topic is proposed, no second one is made (a partial unique index).
    `approvals` collects [{"by", "role", "at"}] until the method's count is reached (two
    people for a critical method); `safety` holds the validator's last refusal reasons.
    """

    __tablename__ = "recommendations"
    __table_args__ = (
        Index("ix_recommendations_org_status", "organization_id", "status", "created_at"),
        Index(
            "uq_recommendations_open_topic",
            "device_id",
            "topic",
            unique=True,
            sqlite_where=text("status = 'proposed'"),
            postgresql_where=text("status = 'proposed'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    rationale: Mapped[str] = mapped_column(Text, default="")
    method: Mapped[str | None] = mapped_column(String(128), nullable=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(_JSON)
    status: Mapped[str] = mapped_column(String(16), default=RecommendationStatus.PROPOSED)
    approvals: Mapped[list[dict[str, Any]]] = mapped_column(_JSON, default=list)
    safety: Mapped[list[dict[str, Any]]] = mapped_column(_JSON, default=list)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    decision_note: Mapped[str] = mapped_column(Text, default="")
    command_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
