"""The device health score: contributors that add up, decay, wear and the day-over-day trend."""

from __future__ import annotations

import math

import pytest

from fleetcore.analytics.findings import Finding, Method, Severity
from fleetcore.analytics.health import (
    FINDINGS_CAP_PER_KEY,
    HALF_LIFE_MS,
    PAST_THRESHOLD_PENALTY,
    health,
)
from fleetcore.analytics.wear import DAY_MS, HOUR_MS, Estimate

NOW = 1_700_000_000_000


def finding(
    key: str, age_ms: int, severity: Severity = "warning", method: Method = Method.ROBUST_Z
) -> Finding:
    return Finding(
        method=method,
        key=key,
        ts=NOW - age_ms,
        score=5.0,
        threshold=3.5,
        expected_low=None,
        expected_high=None,
        evidence=(),
        severity=severity,
    )


def ok_estimate(low_days: float) -> Estimate:
    return Estimate(
        status="ok",
        now_ms=NOW,
        eta_ms=NOW + int((low_days + 2) * DAY_MS),
        low_ms=NOW + int(low_days * DAY_MS),
        high_ms=NOW + int((low_days + 4) * DAY_MS),
        level=0.8,
        model="linear",
        points=300,
    )


def test_no_findings_and_no_wear_scores_one() -> None:
    result = health([], {}, NOW)
    assert result.score == 1.0
    assert result.contributors == ()
    assert result.trend == "stable"
    quiet = {"vibration": Estimate(status="not_degrading", points=300)}
    assert health([], quiet, NOW).score == 1.0
    assert health([], {"v": Estimate(status="not_enough_data", points=3)}, NOW).score == 1.0


def test_contributors_add_up_to_the_drop() -> None:
    findings = [
        finding("temp", HOUR_MS, "critical", Method.RANGE),
        finding("temp", 3 * HOUR_MS, "warning", Method.SPIKE),
        finding("current", 2 * HOUR_MS, "info", Method.EWMA),
    ]
    result = health(findings, {"vibration": ok_estimate(10)}, NOW)
    assert 0 < result.score < 1
    assert math.isclose(sum(c.penalty for c in result.contributors), 1 - result.score)
    penalties = [c.penalty for c in result.contributors]
    assert penalties == sorted(penalties, reverse=True)
    assert {(c.key, c.source) for c in result.contributors} == {
        ("temp", "findings"),
        ("current", "findings"),
        ("vibration", "wear"),
    }
    temp = next(c for c in result.contributors if c.key == "temp")
    assert "critical range" in temp.reason
    assert "warning spike" in temp.reason


def test_overflowing_penalties_are_scaled_to_zero_and_still_add_up() -> None:
    findings = [finding(f"k{i}", HOUR_MS, "critical", Method.RANGE) for i in range(5)]
    for i in range(5):
        findings += [finding(f"k{i}", HOUR_MS, "critical", Method.DRIFT)] * 3
    result = health(findings, {"v": Estimate(status="past_threshold", points=300)}, NOW)
    assert result.score == 0.0
    assert math.isclose(sum(c.penalty for c in result.contributors), 1.0)


def test_findings_decay_with_age_and_are_capped_per_key() -> None:
    fresh = health([finding("t", 0)], {}, NOW).score
    old = health([finding("t", HALF_LIFE_MS)], {}, NOW).score
    assert (1 - old) == pytest.approx((1 - fresh) / 2)
    assert health([finding("t", 8 * DAY_MS)], {}, NOW).score == 1.0  # out of the window
    chatty = [finding("t", 0, "critical", Method.RANGE)] * 50
    assert health(chatty, {}, NOW).score == pytest.approx(1 - FINDINGS_CAP_PER_KEY)


def test_closer_to_the_threshold_is_lower() -> None:
    far = health([], {"v": ok_estimate(40)}, NOW).score
    mid = health([], {"v": ok_estimate(15)}, NOW).score
    near = health([], {"v": ok_estimate(1)}, NOW).score
    past = health([], {"v": Estimate(status="past_threshold", points=300)}, NOW).score
    assert far == 1.0
    assert far > mid > near > past
    assert past == pytest.approx(1 - PAST_THRESHOLD_PENALTY)


def test_trend_against_a_day_ago() -> None:
    recent = [finding("t", HOUR_MS, "critical", Method.RANGE)]
    assert health(recent, {}, NOW).trend == "worsening"
    # Bad a day ago, quiet since: the old findings have decayed.
    old = [finding("t", DAY_MS + HOUR_MS, "critical", Method.RANGE)]
    result = health(old, {}, NOW)
    assert result.trend == "improving"
    assert result.score > result.score_day_ago
    # Wear a day ago vs now.
    wearing = health([], {"v": ok_estimate(2)}, NOW, estimates_day_ago={"v": ok_estimate(25)})
    assert wearing.trend == "worsening"
    assert health([], {"v": ok_estimate(5)}, NOW).trend == "stable"
