"""How the pages say analytics in words: a remaining-useful-life estimate with its interval,
a finding's score against its threshold, a recommendation's evidence. Pure functions."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from fleetcore.analytics.queries import WearView

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
TREND_ARROWS = {"improving": "↑", "stable": "→", "worsening": "↓"}
METHOD_NAMES = {
    "robust_z": "far from the rolling median",
    "ewma": "off its usual level",
    "spike": "a spike",
    "stuck": "stuck (not changing)",
    "drift": "drifting",
    "range": "outside its range",
}


def number(value: Any, digits: int = 3) -> str:
    """A number for people: at most `digits` significant decimals, no float noise."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"
    return text if "e" not in text else f"{value:.2e}"


def _span(ms: int) -> tuple[str, str]:
    """A span of time as (amount, unit) in the largest sensible unit."""
    if ms < 2 * HOUR_MS:
        minutes = max(round(ms / 60_000), 0)
        return str(minutes), "minute" if minutes == 1 else "minutes"
    if ms < 2 * DAY_MS:
        return str(round(ms / HOUR_MS)), "hours"
    return (number(ms / DAY_MS, 2) if ms < 10 * DAY_MS else str(round(ms / DAY_MS))), "days"


def duration(ms: int) -> str:
    """A span of time: 3 hours, 12 days."""
    return " ".join(_span(ms))


def between(low_ms: int, high_ms: int) -> str:
    """Two spans, the unit said once when they share it: "between 12 and 30 days"."""
    (low, low_unit), (high, high_unit) = _span(low_ms), _span(high_ms)
    if low_unit == high_unit:
        return f"between {low} and {high} {high_unit}"
    return f"between {low} {low_unit} and {high} {high_unit}"


def when(ms: int | None) -> str:
    """An epoch-ms time as UTC text."""
    if ms is None:
        return "n/a"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def percent(level: float | None) -> str:
    """0.8 -> 80%."""
    return f"{round(level * 100)}%" if level is not None else "?"


def rul(wear: WearView) -> str:
    """The estimate in one sentence; never a bare point."""
    if wear.status == "ok" and wear.now_ms is not None and wear.low_ms is not None:
        low = duration(max(wear.low_ms - wear.now_ms, 0))
        if wear.high_ms is None:
            return f"not before {low} ({percent(wear.level)}); no upper bound from the data yet"
        span = between(max(wear.low_ms - wear.now_ms, 0), max(wear.high_ms - wear.now_ms, 0))
        return f"{span}, {percent(wear.level)}"
    if wear.status == "not_enough_data":
        return f"not enough data ({wear.points} of {wear.min_points} hourly points)"
    if wear.status == "not_degrading":
        return "not degrading"
    if wear.status == "past_threshold":
        return f"past the threshold ({number(wear.current)} against {number(wear.threshold)})"
    return wear.status.replace("_", " ")


def band(low: float | None, high: float | None) -> str:
    """The expected band of a finding."""
    if low is None and high is None:
        return "n/a"
    return f"{number(low)} … {number(high)}"


def finding_summary(finding: dict[str, Any]) -> str:
    """A finding (as stored or in a recommendation's evidence) in one line."""
    method = str(finding.get("method", ""))
    key = finding.get("key", "a key")
    what = METHOD_NAMES.get(method, method or "an anomaly")
    parts = [f"{key} {what}" if method in METHOD_NAMES else f"{what} on {key}"]
    if "score" in finding:
        score, threshold = number(finding.get("score")), number(finding.get("threshold"))
        parts.append(f"score {score} over threshold {threshold}")
    if finding.get("expected_low") is not None or finding.get("expected_high") is not None:
        parts.append(f"expected {band(finding.get('expected_low'), finding.get('expected_high'))}")
    ts = finding.get("ts")
    if isinstance(ts, int) and not isinstance(ts, bool):
        parts.append(f"at {when(ts)}")
    return ", ".join(parts)


def _wear_of(raw: dict[str, Any], key: str) -> WearView:
    def opt_int(name: str) -> int | None:
        value = raw.get(name)
        return (
            int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    def opt_float(name: str) -> float | None:
        value = raw.get(name)
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    return WearView(
        key=str(raw.get("key", key)),
        status=str(raw.get("status")),
        now_ms=opt_int("now_ms"),
        eta_ms=opt_int("eta_ms"),
        low_ms=opt_int("low_ms"),
        high_ms=opt_int("high_ms"),
        level=opt_float("level"),
        model=None,
        points=opt_int("points") or 0,
        min_points=opt_int("min_points") or 100,
        current=opt_float("current"),
        threshold=opt_float("threshold"),
        direction=str(raw.get("direction", "rising")),
    )


def evidence_lines(evidence: Any) -> list[str]:
    """A recommendation's evidence as sentences: findings summarised, wear estimates as
    remaining useful life, anything else as `name: value`."""
    if not isinstance(evidence, dict):
        return []
    lines: list[str] = []
    if "method" in evidence and "score" in evidence:
        return [f"Finding: {finding_summary(evidence)}"]
    for name, value in evidence.items():
        if isinstance(value, dict) and "method" in value and "score" in value:
            lines.append(f"Finding: {finding_summary(value)}")
        elif isinstance(value, dict) and "status" in value:
            key = str(value.get("key", evidence.get("key", name)))
            lines.append(f"Remaining useful life of {key}: {rul(_wear_of(value, key))}")
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            lines.extend(f"Finding: {finding_summary(v)}" for v in value if "method" in v)
        elif isinstance(value, str | int | float | bool) or value is None:
            lines.append(f"{name.replace('_', ' ')}: {value}")
    return lines


def score_percent(score: Any) -> int:
    """A 0..1 score as a whole percentage."""
    return round(_clamp(score) * 100)


def _clamp(score: Any) -> float:
    if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
        return 0.0
    return min(max(float(score), 0.0), 1.0)


# What the advisory templates call (passed to render, not installed globally).
FOR_TEMPLATES: dict[str, Any] = {
    "rul": rul,
    "band": band,
    "number": number,
    "when": when,
    "score_percent": score_percent,
    "trend_arrows": TREND_ARROWS,
    "method_names": METHOD_NAMES,
}
