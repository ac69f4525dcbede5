"""A device's health score, 0..1, from its recent findings and its wear estimates.

The score is 1 minus the sum of penalties, so every contributor says exactly how much it
took off (and the contributors add up to 1 - score):

- findings, per key: sum over findings of severity weight x method weight x 0.5^(age /
  half-life), capped per key (FINDINGS_CAP_PER_KEY) so one chatty key cannot say
  everything. Severity: a critical finding counts 10x an info one. Method: a range
  violation or a sustained drift says more about health than a single spike.
- wear, per key: by how soon the failure could come, using the near edge of the interval
  (low_ms) because the score is advisory and should warn on what is plausible, not only on
  the point estimate: WEAR_MAX x (1 - lead / WEAR_LEAD_MS) within the lead window,
  PAST_THRESHOLD_PENALTY once past the threshold; nothing for not_enough_data or
  not_degrading (no evidence is not bad evidence).

When the penalties pass 1 the score is 0 and the contributors are scaled down in proportion,
so they still add up to the drop. The trend compares the score now with the score a day ago
(findings up to then, and the wear estimates of then when given).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from fleetcore.analytics.findings import Finding, Method, Severity
from fleetcore.analytics.wear import DAY_MS, HOUR_MS, Estimate

Trend = Literal["improving", "stable", "worsening"]

SEVERITY_WEIGHT: dict[Severity, float] = {"info": 0.02, "warning": 0.08, "critical": 0.2}
METHOD_WEIGHT: dict[Method, float] = {
    Method.RANGE: 1.0,
    Method.DRIFT: 1.0,
    Method.STUCK: 0.8,
    Method.ROBUST_Z: 0.7,
    Method.EWMA: 0.7,
    Method.SPIKE: 0.5,
}
HALF_LIFE_MS = 6 * HOUR_MS  # a finding's weight halves every 6 hours
WINDOW_MS = 7 * DAY_MS  # older findings are not counted at all
FINDINGS_CAP_PER_KEY = 0.4
WEAR_MAX = 0.5
WEAR_LEAD_MS = 30 * DAY_MS  # wear starts to count when failure is plausible within this
PAST_THRESHOLD_PENALTY = 0.6
TREND_DELTA = 0.05  # a change smaller than this is "stable"


@dataclass(frozen=True, slots=True)
class Contributor:
    """One key's share of the score drop."""

    key: str
    source: Literal["findings", "wear"]
    reason: str
    penalty: float  # how much it lowered the score


@dataclass(frozen=True, slots=True)
class Health:
    """A device's score now, its trend against a day ago, and what lowered it."""

    score: float
    score_day_ago: float
    trend: Trend
    contributors: tuple[Contributor, ...]  # largest penalty first


def finding_weight(finding: Finding, now_ms: int) -> float:
    """One finding's raw penalty at now_ms (0 outside the window or in the future)."""
    age = now_ms - finding.ts
    if age < 0 or age > WINDOW_MS:
        return 0.0
    decay: float = 0.5 ** (age / HALF_LIFE_MS)
    return SEVERITY_WEIGHT[finding.severity] * METHOD_WEIGHT.get(finding.method, 0.7) * decay


def wear_penalty(estimate: Estimate) -> tuple[float, str]:
    """The penalty for one key's estimate, and why."""
    if estimate.status == "past_threshold":
        return PAST_THRESHOLD_PENALTY, "past its failure threshold"
    if estimate.status != "ok" or estimate.low_ms is None or estimate.now_ms is None:
        return 0.0, ""
    lead = max(estimate.low_ms - estimate.now_ms, 0)
    if lead >= WEAR_LEAD_MS:
        return 0.0, ""
    days = lead / DAY_MS
    level = round((estimate.level or 0) * 100)
    return WEAR_MAX * (
        1 - lead / WEAR_LEAD_MS
    ), f"may reach its threshold in {days:.1f} days ({level}% interval)"


def contributors(
    findings: Iterable[Finding], estimates: Mapping[str, Estimate], now_ms: int
) -> list[Contributor]:
    """Every key's raw penalty (before any scaling), largest first."""
    per_key: dict[str, float] = defaultdict(float)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for finding in findings:
        weight = finding_weight(finding, now_ms)
        if weight > 0:
            per_key[finding.key] += weight
            counts[finding.key][f"{finding.severity} {finding.method.value}"] += 1
    found = [
        Contributor(
            key=key,
            source="findings",
            reason=", ".join(f"{n} {what}" for what, n in sorted(counts[key].items())),
            penalty=min(total, FINDINGS_CAP_PER_KEY),
        )
        for key, total in per_key.items()
    ]
    worn = []
    for key, estimate in estimates.items():
        penalty, reason = wear_penalty(estimate)
        if penalty > 0:
            worn.append(Contributor(key=key, source="wear", reason=reason, penalty=penalty))
    return sorted(found + worn, key=lambda c: (-c.penalty, c.key, c.source))


def score(
    findings: Iterable[Finding], estimates: Mapping[str, Estimate], now_ms: int
) -> tuple[float, tuple[Contributor, ...]]:
    """The score at now_ms and its contributors, scaled so they add up to 1 - score."""
    raw = contributors(findings, estimates, now_ms)
    total = sum(c.penalty for c in raw)
    if total <= 1.0:
        return 1.0 - total, tuple(raw)
    scaled = tuple(
        Contributor(key=c.key, source=c.source, reason=c.reason, penalty=c.penalty / total)
        for c in raw
    )
    return 0.0, scaled


def health(
    findings: Iterable[Finding],
    estimates: Mapping[str, Estimate],
    now_ms: int,
    estimates_day_ago: Mapping[str, Estimate] | None = None,
) -> Health:
    """The device's health now, with its trend against the same score a day ago."""
    findings = list(findings)
    now_score, now_contributors = score(findings, estimates, now_ms)
    then_ms = now_ms - DAY_MS
    then = [f for f in findings if f.ts <= then_ms]
    then_score, _ = score(
        then, estimates if estimates_day_ago is None else estimates_day_ago, then_ms
    )
    delta = now_score - then_score
    trend: Trend = (
        "improving" if delta > TREND_DELTA else "worsening" if delta < -TREND_DELTA else "stable"
    )
    return Health(
        score=now_score, score_day_ago=then_score, trend=trend, contributors=now_contributors
    )
