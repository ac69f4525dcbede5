"""Schemathesis' negative_data_rejection, minus Pydantic's lax reading of scalars.

The API reads request scalars the way Pydantic's lax mode does: 0/1 and "true" as booleans,
"5" and true as numbers, epoch seconds as times; a query parameter is text, and one sent
several times counts once (the last). A negative case whose only wrong values are of that
kind is leniency, not a defect; every other negative case (out of range, too long, not in
the enum, missing, extra, wrong shape in a body) must still be refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.core.mutations import Mutation, OperatorKind
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import CoveragePhaseData, CoverageScenario
from schemathesis.specs.openapi.checks import negative_data_rejection

SCALARS = bool | int | float | str | None
_TYPE_KEYWORDS = frozenset({"type", "anyOf", "oneOf"})


def lenient_negative_data_rejection(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """negative_data_rejection, except for a scalar of another type read leniently."""
    try:
        return negative_data_rejection(ctx, response, case)
    except AssertionError:
        if _only_lax_scalars(case):
            return None
        raise


def _only_lax_scalars(case: schemathesis.Case) -> bool:
    data = case.meta.phase.data if case.meta is not None else None
    if data is None:
        return False
    if isinstance(data, CoveragePhaseData):
        if data.scenario != CoverageScenario.INCORRECT_TYPE:
            return False
        return isinstance(_coverage_value(case, data), SCALARS)
    return bool(data.mutations) and all(_lax(case, m) for m in data.mutations)


def _lax(case: schemathesis.Case, mutation: Mutation) -> bool:
    """The mutation only put scalars of a type the schema does not allow there."""
    if mutation.operator == OperatorKind.CHANGE_TYPE:
        pass
    elif (
        mutation.operator != OperatorKind.NEGATE_CONSTRAINTS
        or not set(mutation.keywords) <= _TYPE_KEYWORDS
    ):
        return False
    if mutation.parameter_location == ParameterLocation.QUERY:
        # Text on the wire: any JSON type is a string, and a scalar parameter sent several
        # times (an array) is read as its last value.
        return "array" not in _allowed_types(case, mutation)
    if mutation.parameter_location != ParameterLocation.BODY:
        return False
    values = list(_values_at(case.body, mutation.path))
    if not values or not all(isinstance(v, SCALARS) for v in values):
        return False
    allowed = _allowed_types(case, mutation)
    return all(_json_type(v) not in allowed for v in values)


def _values_at(document: Any, path: tuple[str | int, ...]) -> Any:
    """Every value at `path` (array items are walked, as mutation paths skip their indices)."""
    if isinstance(document, list):
        for item in document:
            yield from _values_at(item, path)
        return
    if not path:
        yield document
        return
    if isinstance(document, dict) and path[0] in document:
        yield from _values_at(document[path[0]], path[1:])


def _allowed_types(case: schemathesis.Case, mutation: Mutation) -> set[str]:
    """JSON types the request body schema allows at the mutation's pointer ({} = unknown)."""
    spec = case.operation.schema.raw_schema
    raw = case.operation.definition.raw
    if mutation.parameter_location != ParameterLocation.BODY:
        declared = [p for p in raw.get("parameters", []) if p.get("name") == mutation.parameter]
        return _types_of(spec, declared[0].get("schema", {}) if declared else {})
    content = raw.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    for part in [p for p in mutation.schema_pointer.split("/") if p]:
        schema = _resolve(spec, schema)
        schema = schema.get(part, {}) if isinstance(schema, dict) else {}
    return _types_of(spec, schema)


def _types_of(spec: dict[str, Any], schema: Any) -> set[str]:
    schema = _resolve(spec, schema)
    if not isinstance(schema, dict):
        return set()
    types: set[str] = set()
    declared = schema.get("type")
    for kind in declared if isinstance(declared, list) else [declared]:
        if kind is not None:
            types.add("number" if kind == "integer" else str(kind))
    for union in ("anyOf", "oneOf"):
        for option in schema.get(union, []):
            types |= _types_of(spec, option)
    if not types and not any(k in schema for k in ("anyOf", "oneOf", "type")):
        return {"boolean", "number", "string", "null"}  # anything goes: not lax, a finding
    return types


def _resolve(spec: dict[str, Any], schema: Any) -> Any:
    while isinstance(schema, dict) and "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {int: "number", float: "number", str: "string"}.get(type(value), "null")


def _coverage_value(case: schemathesis.Case, data: CoveragePhaseData) -> object:
    """The value a coverage case made wrong (a container when it is not a scalar field)."""
    containers = {
        ParameterLocation.QUERY: case.query,
        ParameterLocation.PATH: case.path_parameters,
        ParameterLocation.HEADER: case.headers,
    }
    if data.parameter_location == ParameterLocation.BODY:
        field = data.description.split(":", 1)[0]  # "is_active: Incorrect type"
        return case.body.get(field, case.body) if isinstance(case.body, dict) else case.body
    container = containers.get(data.parameter_location) if data.parameter_location else None
    if isinstance(container, dict) and data.parameter in container:
        return container[data.parameter]
    return container
