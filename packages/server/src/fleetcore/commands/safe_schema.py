"""JSON Schema with bounded work: patterns run on RE2, each validation has a step budget.

A manager writes a profile's params schemas and every command is checked against them on the
event loop. jsonschema runs "pattern" and "patternProperties" with Python's backtracking `re`,
so ^(a+)+$ against 29 characters froze the server for 12 s; local `$ref`s fanning out
(anyOf of two references to the next definition, 20 deep) cost 2^20 evaluations. Here:

- every pattern (keyword, patternProperties key, "additionalProperties" next to them) is
  compiled and matched by RE2, in time linear in the input; what RE2 cannot compile
  (backreferences, lookaround) is refused when the schema is saved, as is
  "unevaluatedProperties" alongside "patternProperties" (jsonschema evaluates that pair with
  `re` internally) and "$schema" below the root (see validator_for);
- a validation may take MAX_STEPS keyword evaluations, then it stops (TooCostly);
- a schema nests at most MAX_SCHEMA_DEPTH levels (deeper ones overflow the encoder and the
  stack).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import re2
from jsonschema import (  # type: ignore[import-untyped]  # no stubs shipped
    Draft202012Validator,
    FormatChecker,
    ValidationError,
    validators,
)

# Keyword evaluations per validation: 16 KiB of params (8,000 small items with three keywords
# each) fit; the worst case costs about 0.4 s of CPU, run on a worker thread.
MAX_STEPS = 50_000
MAX_SCHEMA_DEPTH = 32
_PATTERN_CACHE = 256
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a refused pattern is the user's, not a server error to log
_OPTIONS.never_capture = True  # only "does it match" is asked
_OPTIONS.max_mem = 1 << 20  # per pattern; a bigger program is refused as too large

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError]]


class TooCostly(Exception):
    """A validation used its whole step budget."""


class PatternError(ValueError):
    """A pattern RE2 cannot run (backreference, lookaround, bad syntax, too large)."""


def _ecma_escapes(pattern: str) -> str:
    """ECMA-262 \\uXXXX escapes (common in JSON Schema) as RE2's \\x{XXXX}."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        code = pattern[index + 2 : index + 6]
        if pattern[index + 1 : index + 2] == "u" and len(code) == 4 and _is_hex(code):
            out.append(f"\\x{{{code}}}")
            index += 6
        else:  # an escape pair is copied whole, so "\\\\u0041" stays a backslash and "u0041"
            out.append(pattern[index : index + 2])
            index += 2
    return "".join(out)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


@functools.lru_cache(maxsize=_PATTERN_CACHE)
def compile_pattern(pattern: str) -> Any:
    """The pattern compiled by RE2; PatternError says why it cannot be."""
    try:
        return re2.compile(_ecma_escapes(pattern), _OPTIONS)
    except re2.error as error:
        reason = error.args[0] if error.args else error
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise PatternError(f"pattern {pattern!r} is not supported: {reason}") from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
    if validator.is_type(instance, "string") and compile_pattern(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_pattern(pattern)
        for key, value in instance.items():
            if regex.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: dict[str, Any]
) -> Any:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    extras = sorted(
        key
        for key in instance
        if key not in known and not any(p.search(key) is not None for p in patterns)
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:  # jsonschema's own messages
        listed = ", ".join(repr(extra) for extra in extras)
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{listed} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            message = f"Additional properties are not allowed ({listed} {verb} unexpected)"
            yield ValidationError(message)


_BUDGET: ContextVar[list[int] | None] = ContextVar("schema_budget", default=None)


def _counted(keyword: Keyword) -> Keyword:
    def counted(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise TooCostly("its step budget is spent")
        yield from keyword(validator, value, instance, schema)

    return counted


_REPLACED = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@functools.cache
def _bounded(base: Any) -> Any:
    keywords = {
        name: _counted(_REPLACED.get(name, keyword)) for name, keyword in base.VALIDATORS.items()
    }
    return validators.extend(base, keywords)


def _draft(schema: dict[str, Any]) -> Any:
    # The schema's own "$schema" picks the draft; 2020-12 otherwise.
    return validators.validator_for(schema, default=Draft202012Validator)


def validator_for(schema: dict[str, Any]) -> Any:
    """A validator of `schema` whose patterns run on RE2 and whose steps are counted."""
    # jsonschema picks the class again from "$schema" wherever it descends (a "$ref" to
    # "#" included), which would bring back the unbounded one: the root's "$schema" chooses
    # the draft here and is left out, and "$schema" anywhere else is refused (bound_problem).
    unmarked = {key: value for key, value in schema.items() if key != "$schema"}
    return _bounded(_draft(schema))(unmarked)


def iter_errors(schema: dict[str, Any], instance: Any) -> list[ValidationError]:
    """Every error of `instance`; TooCostly past MAX_STEPS, PatternError for a bad pattern,
    RecursionError for references that loop without descending."""
    token = _BUDGET.set([MAX_STEPS])
    try:
        return list(validator_for(schema).iter_errors(instance))
    finally:
        _BUDGET.reset(token)


def _regex_format(instance: object) -> bool:
    if isinstance(instance, str):
        compile_pattern(instance)
    return True


@functools.cache
def _schema_formats(draft: Any) -> Any:
    """The draft's own format checks for schemas, with "regex" judged by RE2."""
    checker = FormatChecker(formats=())
    checker.checkers.update(draft.FORMAT_CHECKER.checkers)
    checker.checks("regex", raises=PatternError)(_regex_format)
    return checker


def _depth_over(value: Any, limit: int) -> bool:
    if limit < 0:
        return True
    if isinstance(value, dict):
        return any(_depth_over(item, limit - 1) for item in value.values())
    if isinstance(value, list):
        return any(_depth_over(item, limit - 1) for item in value)
    return False


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def count_objects(schema: Any) -> int:
    """How many JSON objects `schema` holds (itself included): what its checks cost."""
    if isinstance(schema, dict):
        return 1 + sum(count_objects(item) for item in schema.values())
    if isinstance(schema, list):
        return sum(count_objects(item) for item in schema)
    return 0


def bound_problem(schema: dict[str, Any]) -> str | None:
    """Why evaluating `schema` could escape the bounds (too deep, a "$schema" below the root,
    a pattern pair jsonschema runs with `re`); cheap, and first: the rest assumes it."""
    if _depth_over(schema, MAX_SCHEMA_DEPTH):
        return f"nested deeper than {MAX_SCHEMA_DEPTH} levels"
    keys = set(_keys({key: value for key, value in schema.items() if key != "$schema"}))
    if "$schema" in keys:
        return 'using "$schema" below the root (not supported)'
    if {"unevaluatedProperties", "patternProperties"} <= keys:
        return "using unevaluatedProperties together with patternProperties (not supported)"
    return None


def check_schema(schema: dict[str, Any]) -> None:
    """Raise jsonschema's SchemaError unless `schema` is valid for its draft; a pattern RE2
    cannot run is an error here (its cause a PatternError). About a millisecond per object
    in the schema (2020-12's meta-schema): run it off the event loop, on a bounded schema."""
    draft = _draft(schema)
    draft.check_schema(schema, format_checker=_schema_formats(draft))
