"""A profile's command allow-list: which methods its devices accept, and a JSON Schema for
each method's params. Pure: no I/O (remote `$ref`s are refused when the profile is saved);
bounded work (safe_schema.py: patterns on RE2, a step budget).

`DeviceProfile.command_limits` = {"allowed": {"<method>": <JSON Schema> | null}}; null
means any params. Without "allowed" every method is allowed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
from jsonschema import exceptions  # type: ignore[import-untyped]  # no stubs shipped
from referencing.exceptions import Unresolvable

from fleetcore.commands import safe_schema
from fleetcore.errors import Invalid

MAX_SCHEMA_BYTES = 16 * 1024
# JSON objects in all of a profile's params schemas together: checking one against the
# meta-schema costs up to about a millisecond, so a save costs a few seconds of a worker
# thread at most (500 methods of 16 KiB took minutes of the event loop).
MAX_SCHEMA_OBJECTS = 2_000
MAX_ERRORS = 10
SCHEMAS_FIELD = "body.command_limits.allowed"
_RE2_LACKS = "no backreferences or lookaround"


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def shape_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot be used for a method's params, judged cheaply (bounds, size,
    references); schema_problem judges the rest."""
    bounds = safe_schema.bound_problem(schema)  # first: a deep one would overflow the encoder
    if bounds is not None:
        return bounds
    if len(orjson.dumps(schema)) > MAX_SCHEMA_BYTES:
        return f"larger than {MAX_SCHEMA_BYTES} bytes of JSON"
    remote = [ref for ref in _refs(schema) if not ref.startswith("#")]
    if remote:
        return f"only local references (#...) are allowed, not {remote[0]!r}"
    return None


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot be used for a method's params (None when it can). Costly (the
    meta-schema): see check_schemas."""
    shape = shape_problem(schema)
    if shape is not None:
        return shape
    try:
        safe_schema.check_schema(schema)
    except exceptions.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path)
        at = f" (at {where})" if where else ""
        if isinstance(exc.cause, safe_schema.PatternError):
            return f"not usable: {exc.cause}{at}; patterns run on RE2 ({_RE2_LACKS})"
        return f"not a valid JSON Schema: {exc.message}{at}"
    return None


def schemas_problem(allowed: dict[str, Any]) -> str | None:
    """Why one of an allow-list's params schemas cannot be used (None when all can)."""
    for method, schema in allowed.items():
        problem = schema_problem(schema) if isinstance(schema, dict) else None
        if problem is not None:
            return f"the params schema of {method!r} is {problem}"
    return None


async def check_schemas(allowed: dict[str, Any] | None) -> None:
    """Raise Invalid, as a validation error of the request's allow-list, unless every params
    schema can be used; on a worker thread (the allow-list's shape was checked already)."""
    problem = await asyncio.to_thread(schemas_problem, allowed) if allowed else None
    if problem is not None:
        error = {"field": SCHEMAS_FIELD, "message": problem, "type": "value_error"}
        raise Invalid(
            f"invalid request: {SCHEMAS_FIELD}",
            code="VALIDATION_ERROR",
            details={"errors": [error]},
        )


def allowed_methods(limits: dict[str, Any] | None) -> dict[str, Any] | None:
    """The allow-list of a profile's command_limits, or None when every method is allowed."""
    allowed = limits.get("allowed") if isinstance(limits, dict) else None
    return allowed if isinstance(allowed, dict) else None


def check_command(limits: dict[str, Any] | None, method: str, params: dict[str, Any]) -> None:
    """Raise Invalid unless the profile's allow-list lets this method with these params."""
    allowed = allowed_methods(limits)
    if allowed is None:
        return
    if method not in allowed:
        raise Invalid(
            f"method {method!r} is not in the device profile's allow-list",
            code="COMMAND_NOT_ALLOWED",
            details={"field": "method", "method": method, "allowed": sorted(allowed)[:100]},
        )
    schema = allowed[method]
    if not isinstance(schema, dict):
        return
    if safe_schema.bound_problem(schema) is not None:  # saved before these bounds existed
        raise _unusable(method)
    try:
        found = safe_schema.iter_errors(schema, params)
    except safe_schema.TooCostly as error:
        raise Invalid(
            f"{method}: checking params against the device profile's schema takes too much "
            f"work ({error}); simplify the schema or the params",
            code="PARAMS_CHECK_TOO_COSTLY",
            details={"method": method, "field": "params"},
        ) from None
    except (exceptions.SchemaError, Unresolvable, safe_schema.PatternError, RecursionError):
        # Saved before these checks, or references that loop without descending.
        raise _unusable(method) from None
    if not found:
        return
    found.sort(key=lambda e: (list(map(str, e.absolute_path)), e.message))
    errors = [
        {"field": ".".join(["params", *map(str, e.absolute_path)]), "message": e.message}
        for e in found[:MAX_ERRORS]
    ]
    first = errors[0]
    raise Invalid(
        f"{method}: {first['field']}: {first['message']}",
        code="INVALID_PARAMS",
        details={"method": method, "field": first["field"], "errors": errors},
    )


def _unusable(method: str) -> Invalid:
    return Invalid(
        f"the device profile's params schema for {method!r} cannot be used",
        code="INVALID_PARAMS_SCHEMA",
        details={"method": method},
    )
