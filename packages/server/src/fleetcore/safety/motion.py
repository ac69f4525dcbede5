"""How far and how fast a setpoint may move: per step, and within any sliding hour.

A step is measured from the device's current value of the param's key and, when a command
setting the key is still open (queued, sent, delivered), from that command's target too: the
device may be heading there. Both limits of a step must hold (absolute and relative to
|current|), so a relative limit alone lets nothing move away from zero.

The hourly limit bounds the key's total movement: the path from where the hour started
through the target of every command in the hour that set the key (commands that may have
taken effect) to the new value. Where the hour started: the device's current value when no
command in the hour set the key; otherwise the target of the latest such command before the
hour, else the key's reading when the hour began (context.hour_start), and when neither is
known the start is unknown and the request refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from fractions import Fraction
from itertools import pairwise
from typing import Any

from fleetcore.safety.inputs import EFFECTIVE_STATUSES, OPEN_STATUSES, PastCommand, SafetyContext
from fleetcore.safety.numbers import exact, limit, shown, utc
from fleetcore.safety.policy import ParamRule, SafetyPolicy
from fleetcore.safety.verdict import Code, Reason

WINDOW = timedelta(hours=1)


def key_of(name: str, rule: ParamRule) -> str:
    """The key of a param's current value in the device's state."""
    return rule.key or name


def _targets(
    policy: SafetyPolicy, key: str, commands: list[PastCommand]
) -> Iterator[tuple[PastCommand, Fraction]]:
    """The commands that set `key` (through any method's param of that key), with the value."""
    for command in commands:
        method = policy.methods.get(command.method) if isinstance(command.method, str) else None
        if method is None or not isinstance(command.params, Mapping):
            continue
        for name, rule in method.params.items():
            if key_of(name, rule) != key or name not in command.params:
                continue
            value = exact(command.params[name])
            if value is not None:
                yield command, value
                break


def _well_formed(command: object) -> bool:
    return (
        isinstance(command, PastCommand)
        and isinstance(command.at, datetime)
        and isinstance(command.status, str)
    )


def check_motion(
    policy: SafetyPolicy, method: str, clean: Mapping[str, Any], context: SafetyContext
) -> list[Reason]:
    """The reasons the request's setpoints move too far in one step or within the hour."""
    reasons: list[Reason] = []
    now = utc(context.now)
    ordered = sorted((c for c in context.recent if _well_formed(c)), key=lambda c: utc(c.at))
    for name, rule in policy.methods[method].params.items():
        if name not in clean or not rule.limits_motion:
            continue
        new = exact(clean[name])
        assert new is not None  # checked by check_params
        key = key_of(name, rule)
        current = exact(context.values.get(key))
        base = {"method": method, "param": name, "key": key}
        if current is None:
            reasons.append(
                Reason(
                    Code.CURRENT_VALUE_UNKNOWN,
                    f"{method}: the current value of {key!r} is unknown, so the change of "
                    f"{name!r} cannot be bounded",
                    base,
                )
            )
            continue
        targets = list(_targets(policy, key, ordered))
        pending = [value for command, value in targets if command.status in OPEN_STATUSES]
        origins = [("current", current)] + ([("pending", pending[-1])] if pending else [])
        reasons.extend(_step(rule, new, origins, base, method, name))
        if rule.max_change_per_hour is not None:
            began = exact(context.hour_start.get(key)) if key in context.hour_start else None
            reasons.extend(_hour(rule.max_change_per_hour, new, current, began, targets, now, base))
    return reasons


def _step(
    rule: ParamRule,
    new: Fraction,
    origins: list[tuple[str, Fraction]],
    base: dict[str, Any],
    method: str,
    name: str,
) -> Iterator[Reason]:
    if rule.max_step is not None:
        bound = limit(rule.max_step)
        for origin, start in origins:
            change = abs(new - start)
            if change > bound:
                yield Reason(
                    Code.STEP_TOO_LARGE,
                    f"{method}: {name!r} would change by {shown(change):g} from the {origin} "
                    f"value {shown(start):g}; at most {rule.max_step:g} per step",
                    {
                        **base,
                        "from": shown(start),
                        "origin": origin,
                        "to": shown(new),
                        "change": shown(change),
                        "limit": rule.max_step,
                    },
                )
                break
    if rule.max_step_relative is not None:
        fraction = limit(rule.max_step_relative)
        for origin, start in origins:
            change = abs(new - start)
            if change > fraction * abs(start):
                yield Reason(
                    Code.STEP_TOO_LARGE_RELATIVE,
                    f"{method}: {name!r} would change by {shown(change):g} from the {origin} "
                    f"value {shown(start):g}; at most {rule.max_step_relative:g} of it per step",
                    {
                        **base,
                        "from": shown(start),
                        "origin": origin,
                        "to": shown(new),
                        "change": shown(change),
                        "limit_relative": rule.max_step_relative,
                        "limit": shown(fraction * abs(start)),
                    },
                )
                break


def _hour(
    per_hour: float,
    new: Fraction,
    current: Fraction,
    began: Fraction | None,
    targets: list[tuple[PastCommand, Fraction]],
    now: datetime,
    base: dict[str, Any],
) -> Iterator[Reason]:
    counted = [(c, v) for c, v in targets if c.status in EFFECTIVE_STATUSES]
    inside = [v for c, v in counted if now - utc(c.at) < WINDOW]
    before = [v for c, v in counted if now - utc(c.at) >= WINDOW]
    if not inside:
        start = current
    elif before:
        start = before[-1]
    elif began is not None:
        start = began
    else:
        yield Reason(
            Code.RATE_BASELINE_UNKNOWN,
            f"{base['method']}: commands in the last hour set {base['key']!r} but where it "
            "stood before them is unknown, so its hourly movement cannot be bounded",
            {**base, "commands_in_hour": len(inside)},
        )
        return
    path = [start, *inside, new]
    travel = sum((abs(b - a) for a, b in pairwise(path)), Fraction(0))
    if travel > limit(per_hour):
        yield Reason(
            Code.RATE_TOO_HIGH,
            f"{base['method']}: {base['key']!r} would move {shown(travel):g} within an hour "
            f"({len(inside)} earlier command(s) in it); at most {per_hour:g} per hour",
            {
                **base,
                "movement": shown(travel),
                "limit": per_hour,
                "commands_in_hour": len(inside),
                "to": shown(new),
            },
        )
