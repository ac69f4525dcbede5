"""Telemetry payload codec: bytes in, typed readings and named problems out. No I/O.

Accepted shapes (the same over HTTP and MQTT, ThingsBoard-compatible):
``{"key": value, ...}`` (server time), ``{"ts": <epoch ms>, "values": {...}}``, or a JSON
array of either. Values are numbers, strings, booleans or JSON objects/arrays.

A payload that is not one of those shapes is refused whole (`PayloadError`); within a
well-formed payload each bad reading is named in `problems` and the good ones are kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from fleetcore_protocol.jsonvalue import MAX_DEPTH, unstorable, unstorable_text

JsonValue = float | str | bool | dict[str, Any] | list[Any]
Loads = Callable[[bytes], Any]

_KEY = re.compile(r"[A-Za-z0-9_.:\-/]+")  # fullmatch: "$" would allow a final newline


class Kind(IntEnum):
    """How a value is stored: numbers, text, booleans and JSON are kept apart."""

    NUMBER = 1
    TEXT = 2
    BOOLEAN = 3
    JSON = 4


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one key at one time (epoch milliseconds)."""

    key: str
    ts: int
    kind: Kind
    value: JsonValue


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one item of a payload was not accepted."""

    code: str  # KEY_INVALID, VALUE_INVALID, TS_INVALID, TS_IN_FUTURE, TOO_MANY_READINGS, ...
    message: str
    item: int | None = None  # index in a top-level array
    key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for answers and dead letters."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.item is not None:
            out["item"] = self.item
        if self.key is not None:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits every payload is held to."""

    max_bytes: int = 256 * 1024
    max_readings: int = 10_000
    max_key_length: int = 128
    max_text_length: int = 8 * 1024
    max_json_bytes: int = 16 * 1024
    max_json_depth: int = MAX_DEPTH
    max_future_ms: int = 10 * 60 * 1000  # clocks drift; a day ahead is a bug
    min_ts: int = 946_684_800_000  # 2000-01-01: earlier is a device without a clock


@dataclass(slots=True)
class Decoded:
    """The readings a payload holds and the problems with the rest."""

    readings: list[Reading] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


class PayloadError(ValueError):
    """The payload as a whole is unusable (not JSON, wrong shape, too big)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _classify(value: Any, limits: Limits) -> tuple[Kind, JsonValue] | str:
    """The kind and stored form of a value, or why it is refused."""
    if isinstance(value, bool):
        return Kind.BOOLEAN, value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # json.loads reads integers far beyond a double
            return "number out of range"
        if not math.isfinite(number):
            return "numbers must be finite"
        return Kind.NUMBER, number
    if isinstance(value, str):
        if len(value) > limits.max_text_length:
            return f"text longer than {limits.max_text_length} characters"
        if "\x00" in value:  # no database stores NUL in text
            return "text must not contain NUL characters"
        if problem := unstorable_text(value):
            return problem
        return Kind.TEXT, value
    if isinstance(value, dict | list):
        # Checked before encoding: json.dumps recurses, and the writer's orjson accepts less.
        if problem := unstorable(value, limits.max_json_depth):
            return problem
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) > limits.max_json_bytes:
            return f"JSON value larger than {limits.max_json_bytes} bytes"
        if b"\\u0000" in encoded:
            return "JSON must not contain NUL characters"
        return Kind.JSON, value
    return "null is not a value; omit the key instead"


def _values(
    values: dict[str, Any], ts: int, item: int | None, limits: Limits, out: Decoded
) -> None:
    for key, raw in values.items():
        if not (0 < len(key) <= limits.max_key_length) or not _KEY.fullmatch(key):
            out.problems.append(
                Problem(
                    "KEY_INVALID",
                    f"key must be 1-{limits.max_key_length} characters "
                    "of letters, digits and _ . : - /",
                    item,
                    key[:200],
                )
            )
            continue
        classified = _classify(raw, limits)
        if isinstance(classified, str):
            out.problems.append(Problem("VALUE_INVALID", classified, item, key))
            continue
        kind, value = classified
        out.readings.append(Reading(key, ts, kind, value))


def _entry(entry: Any, item: int | None, now_ms: int, limits: Limits, out: Decoded) -> None:
    if not isinstance(entry, dict):
        out.problems.append(Problem("ITEM_INVALID", "each item must be a JSON object", item))
        return
    if "values" in entry and set(entry) <= {"ts", "values"}:
        ts = entry.get("ts", now_ms)
        # Only floats can be infinite (math.isfinite overflows on integers beyond a double).
        if (
            isinstance(ts, bool)
            or not isinstance(ts, int | float)
            or (isinstance(ts, float) and not math.isfinite(ts))
        ):
            out.problems.append(Problem("TS_INVALID", "ts must be epoch milliseconds", item))
            return
        ts = int(ts)
        if ts < limits.min_ts:
            out.problems.append(
                Problem("TS_INVALID", "ts is before 2000-01-01; is it in seconds, not ms?", item)
            )
            return
        if ts > now_ms + limits.max_future_ms:
            out.problems.append(Problem("TS_IN_FUTURE", "ts is too far in the future", item))
            return
        if not isinstance(entry["values"], dict):
            out.problems.append(Problem("ITEM_INVALID", "values must be a JSON object", item))
            return
        _values(entry["values"], ts, item, limits, out)
        return
    _values(entry, now_ms, item, limits, out)


def decode_telemetry(
    payload: bytes, *, now_ms: int, limits: Limits | None = None, loads: Loads = json.loads
) -> Decoded:
    """Decode a telemetry payload; raises PayloadError when it is unusable as a whole."""
    limits = limits or Limits()
    if len(payload) > limits.max_bytes:
        raise PayloadError("PAYLOAD_TOO_LARGE", f"payload larger than {limits.max_bytes} bytes")
    try:
        document = loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise PayloadError("MALFORMED_JSON", "the payload is not valid JSON") from None
    except RecursionError:  # json's C decoder stops at the interpreter's recursion limit
        raise PayloadError("MALFORMED_JSON", "the payload nests too deeply") from None
    out = Decoded()
    if isinstance(document, list):
        if not document:
            raise PayloadError("EMPTY", "the array holds no readings")
        for index, entry in enumerate(document):
            _entry(entry, index, now_ms, limits, out)
    elif isinstance(document, dict):
        if not document:
            raise PayloadError("EMPTY", "the object holds no readings")
        _entry(document, None, now_ms, limits, out)
    else:
        raise PayloadError(
            "SHAPE_INVALID", 'expected {"key": value}, {"ts": ms, "values": {...}} or an array'
        )
    if len(out.readings) > limits.max_readings:
        raise PayloadError(
            "TOO_MANY_READINGS", f"more than {limits.max_readings} readings in one payload"
        )
    return out
