"""From a finding or a wear warning to proposed actions: pure, so it is table-tested.

A profile's `recommend` rules say which trigger (a detection method, or "wear") on which key
proposes what; without rules, the defaults below propose inspections only, never a command:
a profile must say itself which commands analytics may propose. A param computed from a
current value (ParamFrom) that is unknown makes no proposal (a command with a guessed value
would be worse than none). A proposal is advice: it becomes a command only when people
approve it and the safety gate passes it (fleetcore.advisory, fleetcore.commands).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fleetcore.analytics.config import ParamFrom, RecommendRule, matches
from fleetcore.analytics.wear import DAY_MS, Estimate

DEFAULT_RULES: tuple[RecommendRule, ...] = (
    RecommendRule(on="range", kind="inspect", title="Inspect the machine: {key} out of range"),
    RecommendRule(on="stuck", kind="inspect", title="Check the {key} sensor: it stopped changing"),
    RecommendRule(
        on="wear", kind="inspect", title="Plan maintenance: {key} is nearing its failure threshold"
    ),
)


@dataclass(frozen=True, slots=True)
class Trigger:
    """What happened: a method's finding or "wear", on a key, how serious, and why."""

    on: str
    key: str
    severity: str
    rationale: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Proposal:
    """One action to propose; method and params are None for an inspection."""

    kind: str
    topic: str
    title: str
    rationale: str
    method: str | None
    params: dict[str, Any] | None
    evidence: dict[str, Any]
    expires_after_s: int


def wear_trigger(key: str, estimate: Estimate, warn_within_ms: int) -> Trigger | None:
    """A wear warning when failure is plausible within the warning window (or is past)."""
    if estimate.status == "past_threshold":
        severity, text = "critical", f"{key} is past its failure threshold"
    elif estimate.status == "ok" and estimate.low_ms is not None and estimate.now_ms is not None:
        lead = estimate.low_ms - estimate.now_ms
        if lead > warn_within_ms:
            return None
        level = round((estimate.level or 0) * 100)
        high = (
            "later"
            if estimate.high_ms is None
            else f"{(estimate.high_ms - estimate.now_ms) / DAY_MS:.1f} days"
        )
        text = (
            f"{key} may reach its failure threshold in {max(lead, 0) / DAY_MS:.1f} to {high} "
            f"({level}% interval, {estimate.model} trend over {estimate.points} hourly points)"
        )
        severity = "critical" if lead <= warn_within_ms // 2 else "warning"
    else:
        return None
    return Trigger("wear", key, severity, text + ".", {"wear": estimate_dict(estimate)})


def estimate_dict(estimate: Estimate) -> dict[str, Any]:
    """An estimate as JSON (what health rows and the API show)."""
    return {
        "status": estimate.status,
        "now_ms": estimate.now_ms,
        "eta_ms": estimate.eta_ms,
        "low_ms": estimate.low_ms,
        "high_ms": estimate.high_ms,
        "level": estimate.level,
        "model": estimate.model,
        "points": estimate.points,
        "current": estimate.current,
        "intervals": [
            {"level": i.level, "low_ms": i.low_ms, "high_ms": i.high_ms} for i in estimate.intervals
        ],
    }


def _param(value: Any, current: Mapping[str, float]) -> Any:
    if not isinstance(value, ParamFrom):
        return value
    base = current.get(value.from_key)
    if base is None:
        return None
    result = base * value.times + value.plus
    return round(result, 6) if math.isfinite(result) else None


def propose(
    trigger: Trigger, rules: Sequence[RecommendRule], current: Mapping[str, float]
) -> list[Proposal]:
    """The proposals the rules (or the defaults, when there are none) make for a trigger."""
    out: list[Proposal] = []
    for rule in rules or DEFAULT_RULES:
        if not matches(rule, trigger.on, trigger.key, trigger.severity):
            continue
        params: dict[str, Any] | None = None
        if rule.method is not None:
            params = {name: _param(value, current) for name, value in rule.params.items()}
            if any(v is None for v in params.values()):
                continue  # a current value is unknown: no guessed command
        out.append(
            Proposal(
                kind=rule.kind,
                topic=f"{trigger.on}:{trigger.key}:{rule.kind}"[:200],
                title=rule.title.replace("{key}", trigger.key)[:300],
                rationale=trigger.rationale,
                method=rule.method,
                params=params,
                evidence={**trigger.evidence, "trigger": trigger.on, "key": trigger.key},
                expires_after_s=rule.expires_after_s,
            )
        )
    return out
