"""Response bodies of the analytics read API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from fleetcore.analytics.queries import DeviceAnalytics, FindingView, RankedDevice, WearView


class RankedDeviceOut(BaseModel):
    """A device in the fleet health ranking (worst first)."""

    device_id: uuid.UUID
    name: str
    score: float
    score_day_ago: float
    trend: str
    top_contributors: list[dict[str, Any]]
    open_findings: int
    updated_at: datetime

    @classmethod
    def of(cls, item: RankedDevice) -> RankedDeviceOut:
        """From the query's row."""
        return cls(
            device_id=item.device_id,
            name=item.name,
            score=item.score,
            score_day_ago=item.score_day_ago,
            trend=item.trend,
            top_contributors=item.top_contributors,
            open_findings=item.open_findings,
            updated_at=item.updated_at,
        )


class FindingOut(BaseModel):
    """One anomaly: method, score against its threshold, expected band and evidence."""

    id: int
    device_id: uuid.UUID
    device_name: str
    key: str
    method: str
    severity: str
    ts: int
    score: float
    threshold: float
    expected_low: float | None
    expected_high: float | None
    evidence: list[list[float]]
    explanation: str
    created_at: datetime

    @classmethod
    def of(cls, view: FindingView) -> FindingOut:
        """From the query's row."""
        f = view.finding
        return cls(
            id=f.id,
            device_id=f.device_id,
            device_name=view.device_name,
            key=f.key,
            method=f.method,
            severity=f.severity,
            ts=f.ts,
            score=f.score,
            threshold=f.threshold,
            expected_low=f.expected_low,
            expected_high=f.expected_high,
            evidence=f.evidence,
            explanation=f.explanation,
            created_at=f.created_at,
        )


class HealthOut(BaseModel):
    """A device's health score 0..1, a day ago, trend, and what lowered it."""

    score: float
    score_day_ago: float
    trend: str
    contributors: list[dict[str, Any]]
    open_findings: int
    updated_at: datetime


class WearOut(BaseModel):
    """Remaining useful life of one wear key: status ok has eta_ms and the interval
    [low_ms, high_ms] at `level` (high_ms null: unbounded); not_enough_data has `points` of
    `min_points` hourly means; not_degrading and past_threshold have no times."""

    key: str
    status: str
    now_ms: int | None
    eta_ms: int | None
    low_ms: int | None
    high_ms: int | None
    level: float | None
    model: str | None
    points: int
    min_points: int
    current: float | None
    threshold: float | None
    direction: str

    @classmethod
    def of(cls, view: WearView) -> WearOut:
        """From the query's row."""
        return cls.model_validate(view, from_attributes=True)


class DeviceAnalyticsOut(BaseModel):
    """One device's analytics; `configured` says whether its profile watches any key."""

    device_id: uuid.UUID
    name: str
    configured: bool
    health: HealthOut | None
    wear: list[WearOut]
    recent_findings: list[FindingOut]

    @classmethod
    def of(cls, view: DeviceAnalytics) -> DeviceAnalyticsOut:
        """From the query's result."""
        h = view.health
        return cls(
            device_id=view.device_id,
            name=view.name,
            configured=view.configured,
            health=None
            if h is None
            else HealthOut(
                score=h.score,
                score_day_ago=h.score_day_ago,
                trend=h.trend,
                contributors=h.contributors if isinstance(h.contributors, list) else [],
                open_findings=h.open_findings,
                updated_at=h.updated_at,
            ),
            wear=[WearOut.of(w) for w in view.wear],
            recent_findings=[FindingOut.of(f) for f in view.findings],
        )
