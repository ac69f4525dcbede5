"""Interlocks: a method (or a move of one of its params) refused while the device has an
active alert matching a condition.

The grammar, in policy.Interlock: `method` (omitted: every method), `param` and `direction`
(any | increase | decrease; omitted param: the whole method), and `when`, an alert condition
(severity at least, rule name, key; each given field must hold, none given: any open alert).
Where a direction cannot be judged (the current value is unknown) the interlock holds: it
fails closed. An alert whose severity is not one we know counts as the most severe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fleetcore.safety.inputs import ActiveAlert
from fleetcore.safety.motion import key_of
from fleetcore.safety.numbers import exact
from fleetcore.safety.policy import SEVERITIES, AlertCondition, Interlock, SafetyPolicy
from fleetcore.safety.verdict import Code, Reason

MAX_ALERTS_LISTED = 5


def _rank(severity: object) -> int:
    """0 for the most severe; an unknown severity counts as the most severe."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def matches(condition: AlertCondition, alert: ActiveAlert) -> bool:
    """True if the alert meets every field the condition gives."""
    if condition.severity_at_least is not None and _rank(alert.severity) > _rank(
        condition.severity_at_least
    ):
        return False
    if condition.rule is not None and alert.rule != condition.rule:
        return False
    return condition.key is None or alert.key == condition.key


def _moves(lock: Interlock, new: object, current: object) -> bool:
    """True if setting the param to `new` moves it in the lock's direction (or cannot tell)."""
    if lock.direction == "any":
        return True
    to, start = exact(new), exact(current)
    if to is None or start is None:
        return True
    return to > start if lock.direction == "increase" else to < start


def check_interlocks(
    policy: SafetyPolicy,
    method: str,
    clean: Mapping[str, Any],
    values: Mapping[str, Any],
    alerts: Sequence[ActiveAlert],
) -> list[Reason]:
    """The interlocks the request runs into, given the device's open alerts."""
    reasons: list[Reason] = []
    rules = policy.methods[method].params
    for lock in policy.interlocks:
        if lock.method is not None and lock.method != method:
            continue
        if lock.param is not None:
            if lock.param not in clean or lock.param not in rules:
                continue
            current = values.get(key_of(lock.param, rules[lock.param]))
            if not _moves(lock, clean[lock.param], current):
                continue
        found = [a for a in alerts if isinstance(a, ActiveAlert) and matches(lock.when, a)]
        if not found:
            continue
        what = method if lock.param is None else f"{method} ({lock.direction} {lock.param!r})"
        reasons.append(
            Reason(
                Code.INTERLOCK_ACTIVE,
                f"interlock {lock.name!r}: no {what} while alert {found[0].rule!r} "
                f"({found[0].severity}) is open",
                {
                    "interlock": lock.name,
                    "method": method,
                    "param": lock.param,
                    "direction": lock.direction,
                    "alerts": [
                        {"rule": a.rule, "severity": a.severity, "key": a.key}
                        for a in found[:MAX_ALERTS_LISTED]
                    ],
                    "alert_count": len(found),
                },
            )
        )
    return reasons
