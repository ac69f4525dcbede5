"""The params of a request against its method's rules: nothing unknown, nothing required
missing, each of its type, finite, within min/max, among the allowed values, short enough.

Returns the reasons and the params that passed their type checks, which the motion limits
and interlocks then read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fleetcore.safety.numbers import exact, is_number, limit, shown
from fleetcore.safety.policy import MAX_MAGNITUDE, MethodPolicy, ParamRule
from fleetcore.safety.verdict import Code, Reason

MAX_LISTED = 20  # unknown param names listed in one reason


def check_params(
    method: str, policy: MethodPolicy, params: Mapping[str, Any]
) -> tuple[list[Reason], dict[str, Any]]:
    """The reasons the params break `policy`, and those of the right type and bounds."""
    reasons: list[Reason] = []
    unknown = sorted(str(name) for name in params if name not in policy.params)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:MAX_LISTED])
        reasons.append(
            Reason(
                Code.PARAM_UNKNOWN,
                f"{method}: unknown params {listed}",
                {"method": method, "params": unknown[:MAX_LISTED], "count": len(unknown)},
            )
        )
    clean: dict[str, Any] = {}
    for name, rule in policy.params.items():
        if name not in params:
            if rule.required:
                reasons.append(
                    Reason(
                        Code.PARAM_MISSING,
                        f"{method}: param {name!r} is required",
                        {"method": method, "param": name},
                    )
                )
            continue
        found = _check_value(method, name, rule, params[name])
        if found is None:
            clean[name] = params[name]
        else:
            reasons.append(found)
    return reasons, clean


def _reason(code: Code, method: str, name: str, text: str, **details: Any) -> Reason:
    return Reason(
        code, f"{method}: param {name!r} {text}", {"method": method, "param": name, **details}
    )


def _check_value(method: str, name: str, rule: ParamRule, value: object) -> Reason | None:
    if rule.type == "boolean":
        if not isinstance(value, bool):
            return _reason(
                Code.PARAM_WRONG_TYPE, method, name, "must be a boolean", expected="boolean"
            )
    elif rule.type == "string":
        if not isinstance(value, str):
            return _reason(
                Code.PARAM_WRONG_TYPE, method, name, "must be a string", expected="string"
            )
        if rule.max_length is not None and len(value) > rule.max_length:
            return _reason(
                Code.PARAM_TOO_LONG,
                method,
                name,
                f"is longer than {rule.max_length} characters",
                length=len(value),
                max_length=rule.max_length,
            )
    else:
        problem = _check_number(method, name, rule, value)
        if problem is not None:
            return problem
    if rule.allowed is not None and not _among(value, rule.allowed):
        return _reason(
            Code.PARAM_VALUE_NOT_ALLOWED,
            method,
            name,
            f"must be one of {rule.allowed!r}",
            value=value,
            allowed=rule.allowed,
        )
    return None


def _check_number(method: str, name: str, rule: ParamRule, value: object) -> Reason | None:
    if not is_number(value):
        return _reason(
            Code.PARAM_WRONG_TYPE, method, name, f"must be a {rule.type}", expected=rule.type
        )
    if isinstance(value, float) and not math.isfinite(value):
        return _reason(
            Code.PARAM_NOT_FINITE, method, name, "must be a finite number", value=repr(value)
        )
    number = exact(value)
    if number is None:
        return _reason(
            Code.PARAM_TOO_LARGE, method, name, f"is beyond ±{MAX_MAGNITUDE:g}", limit=MAX_MAGNITUDE
        )
    if rule.type == "integer" and number.denominator != 1:
        return _reason(
            Code.PARAM_WRONG_TYPE, method, name, "must be an integer", expected="integer"
        )
    if rule.min is not None and number < limit(rule.min):
        return _reason(
            Code.PARAM_BELOW_MIN,
            method,
            name,
            f"is below the minimum {rule.min:g}",
            value=shown(number),
            min=rule.min,
        )
    if rule.max is not None and number > limit(rule.max):
        return _reason(
            Code.PARAM_ABOVE_MAX,
            method,
            name,
            f"is above the maximum {rule.max:g}",
            value=shown(number),
            max=rule.max,
        )
    return None


def _among(value: object, allowed: list[Any]) -> bool:
    if is_number(value):
        number = exact(value)
        return any(is_number(item) and exact(item) == number for item in allowed)
    return any(type(item) is type(value) and item == value for item in allowed)
