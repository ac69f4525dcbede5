"""The rule form of the pages: its fields as the API's bodies, and a rule as its fields."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from fleetcore.rules.models import Rule

LEAVES = ("threshold", "outside_range", "rate_of_change", "no_data")
KINDS = (*LEAVES, "json")
OPS = (">", ">=", "<", "<=", "==", "!=")
PERS = ("second", "minute", "hour")
_FIELDS = ("key", "op", "value", "min", "max", "window_s", "per", "minutes", "json")
SCOPE_KINDS = ("device", "profile", "asset")


class FormErrors(Exception):
    """Messages for the form, by field ("form" for the whole form)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def _scalar(text: str) -> Any:
    """A threshold's value: a number, true/false, or else the text itself."""
    stripped = text.strip()
    try:
        value = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return stripped
    return value if isinstance(value, int | float | bool | str) else stripped


def _number(text: str, field: str, errors: dict[str, str], prefix: str) -> Any:
    try:
        return float(text) if "." in text or "e" in text.lower() else int(text)
    except ValueError:
        errors.setdefault(prefix, f"{field} must be a number")
        return None


def condition_of(form: Mapping[str, str], prefix: str, errors: dict[str, str]) -> Any:
    """The condition described by the fields `{prefix}_type`, `{prefix}_key`, ...; None for
    no condition (the clear condition may be left out)."""
    kind = form.get(f"{prefix}_type", "")
    get = {f: form.get(f"{prefix}_{f}", "").strip() for f in _FIELDS}
    field = "condition" if prefix == "cond" else "clear_condition"
    if kind in ("", "none"):
        return None
    if kind == "json":
        try:
            parsed = orjson.loads(get["json"] or "null")
        except orjson.JSONDecodeError:
            errors[field] = "the JSON condition is not valid JSON"
            return None
        if not isinstance(parsed, dict):
            errors[field] = "the JSON condition must be an object"
            return None
        return parsed
    if kind not in LEAVES:
        errors[field] = f"the condition type must be one of {', '.join(KINDS)}"
        return None
    if kind == "threshold":
        return {"type": kind, "key": get["key"], "op": get["op"], "value": _scalar(get["value"])}
    if kind == "outside_range":
        return {
            "type": kind,
            "key": get["key"],
            "min": _number(get["min"], "min", errors, field),
            "max": _number(get["max"], "max", errors, field),
        }
    if kind == "rate_of_change":
        return {
            "type": kind,
            "key": get["key"],
            "window_s": _number(get["window_s"], "window (s)", errors, field),
            "op": get["op"],
            "value": _number(get["value"], "value", errors, field),
            "per": get["per"] or "minute",
        }
    found = {"type": kind, "minutes": _number(get["minutes"], "minutes", errors, field)}
    if get["key"]:
        found["key"] = get["key"]
    return found


def scope_of(form: Mapping[str, str], errors: dict[str, str]) -> dict[str, uuid.UUID | None]:
    """`scope` = "device:<id>" | "profile:<id>" | "asset:<id>" as the three scope fields."""
    kind, _, raw = form.get("scope", "").partition(":")
    scopes: dict[str, uuid.UUID | None] = {f"{k}_id": None for k in SCOPE_KINDS}
    try:
        if kind not in SCOPE_KINDS:
            raise ValueError
        scopes[f"{kind}_id"] = uuid.UUID(raw)
    except ValueError:
        errors["scope"] = "choose the device, profile or asset the rule watches"
    return scopes


def body_of(form: Mapping[str, str]) -> dict[str, Any]:
    """The form as the body of POST /api/v1/rules; FormErrors names the bad fields."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "description": form.get("description", ""),
        **scope_of(form, errors),
        "condition": condition_of(form, "cond", errors),
        "clear_condition": condition_of(form, "clear", errors),
        "severity": form.get("severity", ""),
        "enabled": bool(form.get("enabled")),
    }
    duration = form.get("duration_s", "").strip() or "0"
    if duration.isdigit():
        body["duration_s"] = int(duration)
    else:
        errors["duration_s"] = "duration must be a whole number of seconds"
    if body["condition"] is None and "condition" not in errors:
        errors["condition"] = "a rule needs a condition"
    if errors:
        raise FormErrors(errors)
    return body


def validation_errors(exc: ValidationError) -> FormErrors:
    """Pydantic's complaints as messages by form field."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "form"
        if field.endswith("_id") and field != "rule_id":
            field = "scope"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        where = ".".join(p for p in loc[1:] if p not in LEAVES and p not in ("all", "any"))
        errors.setdefault(field, f"{where}: {message}" if where else message)
    return FormErrors(errors)


def _leaf_fields(prefix: str, condition: dict[str, Any] | None) -> dict[str, str]:
    fields = {f"{prefix}_{f}": "" for f in _FIELDS}
    if condition is None:
        fields[f"{prefix}_type"] = "none"
        return fields
    kind = condition.get("type", "threshold")
    if kind not in LEAVES:
        fields[f"{prefix}_type"] = "json"
        fields[f"{prefix}_json"] = orjson.dumps(condition, option=orjson.OPT_INDENT_2).decode()
        return fields
    fields[f"{prefix}_type"] = kind
    for name in _FIELDS:
        value = condition.get(name)
        if value is not None:
            fields[f"{prefix}_{name}"] = (
                orjson.dumps(value).decode() if isinstance(value, bool) else str(value)
            )
    return fields


def fields_of(rule: Rule) -> dict[str, str]:
    """A stored rule as the form's values."""
    # No scope: a rule another module owns (a watchlist's fires on any of its cameras).
    scope = next(
        (f"{k}:{getattr(rule, f'{k}_id')}" for k in SCOPE_KINDS if getattr(rule, f"{k}_id")), ""
    )
    return {
        "name": rule.name,
        "description": rule.description,
        "scope": scope,
        "duration_s": str(rule.duration_s),
        "severity": rule.severity,
        "enabled": "1" if rule.enabled else "",
        **_leaf_fields("cond", rule.condition),
        **_leaf_fields("clear", rule.clear_condition),
    }


def blank_fields() -> dict[str, str]:
    """A new rule's form: a threshold, warning, enabled, no clear condition."""
    return {
        "name": "",
        "description": "",
        "scope": "",
        "duration_s": "0",
        "severity": "warning",
        "enabled": "1",
        **_leaf_fields("cond", {"type": "threshold"}),
        **_leaf_fields("clear", None),
    }
