"""Device event payloads: bytes in, typed events out, or Invalid naming what is wrong. No I/O.

Shapes, the same over HTTP and MQTT: one object
``{"type": "door_open", "severity": "info", "data": {...}, "ts": <epoch ms>}`` or a JSON array
of 1..100 of them. Only ``type`` is required; ``severity`` defaults to info, ``ts`` to now and
``data`` to ``{}`` (null counts as left out). Unlike telemetry, one bad event refuses the whole
payload: events are few and each one matters, so a sender must fix and resend them all.
An event may also name its attachments in ``media`` (file parts of the same multipart request,
or media ids uploaded before); the media module resolves them (events/ports.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import orjson

from fleetcore.errors import Invalid
from fleetcore.events.models import SEVERITIES
from fleetcore_protocol.jsonvalue import unstorable

MAX_EVENTS = 100
MAX_TYPE_LENGTH = 64
MAX_DATA_BYTES = 16 * 1024
MIN_TS_MS = 946_684_800_000  # 2000-01-01: earlier is a device without a clock (or seconds)
MAX_FUTURE_MS = 10 * 60 * 1000  # clocks drift a little; further ahead is a bug
DEFAULT_SEVERITY = "info"

MAX_MEDIA = 8  # attachments one event may own
_TYPE = re.compile(r"[A-Za-z0-9_.:-]+")  # fullmatch: "$" would allow a final newline
# A file part's name in the same multipart request, or a media id uploaded before.
_MEDIA_REF = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FIELDS = frozenset({"type", "severity", "data", "ts", "media"})


@dataclass(frozen=True, slots=True)
class EventIn:
    """One validated event; `ts_ms` is epoch milliseconds."""

    type: str
    severity: str
    data: dict[str, Any]
    ts_ms: int
    media: tuple[str, ...] = ()  # attachment references, resolved by the media hook


def _bad(message: str, index: int | None, field: str | None) -> Invalid:
    return Invalid(message, code="INVALID_EVENT", details={"index": index, "field": field})


def _event(item: Any, index: int | None, now_ms: int) -> EventIn:
    if not isinstance(item, dict):
        raise _bad("each event must be a JSON object", index, None)
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise _bad(
            f"unknown field {unknown[0][:64]!r}; an event has type, severity, data, ts and media",
            index,
            unknown[0][:64],
        )
    kind = item.get("type")
    if (
        not isinstance(kind, str)
        or not (0 < len(kind) <= MAX_TYPE_LENGTH)
        or not _TYPE.fullmatch(kind)
    ):
        raise _bad(
            f"type is required: 1-{MAX_TYPE_LENGTH} characters of letters, digits and _ . : -",
            index,
            "type",
        )
    severity = item.get("severity")
    if severity is None:
        severity = DEFAULT_SEVERITY
    elif severity not in SEVERITIES:
        raise _bad(f"severity must be one of {', '.join(SEVERITIES)}", index, "severity")
    data = item.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise _bad("data must be a JSON object", index, "data")
    else:
        # Before encoding: orjson writes at most 254 levels and raises a TypeError beyond.
        if problem := unstorable(data):
            raise _bad(f"data: {problem}", index, "data")
        encoded = orjson.dumps(data)
        if len(encoded) > MAX_DATA_BYTES:
            raise _bad(f"data is larger than {MAX_DATA_BYTES} bytes as JSON", index, "data")
        if b"\\u0000" in encoded:  # no database stores NUL in text or JSON
            raise _bad("data must not contain NUL characters", index, "data")
    return EventIn(
        type=kind,
        severity=severity,
        data=data,
        ts_ms=_ts(item.get("ts"), index, now_ms),
        media=_media(item.get("media"), index),
    )


def _media(raw: Any, index: int | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    if (
        not isinstance(raw, list)
        or not (0 < len(raw) <= MAX_MEDIA)
        or not all(isinstance(ref, str) and _MEDIA_REF.fullmatch(ref) for ref in raw)
    ):
        raise _bad(
            f"media must be a list of 1-{MAX_MEDIA} attachment names or media ids",
            index,
            "media",
        )
    if len(set(raw)) != len(raw):
        raise _bad("media lists an attachment twice", index, "media")
    return tuple(raw)


def _ts(raw: Any, index: int | None, now_ms: int) -> int:
    if raw is None:
        return now_ms
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise _bad("ts must be epoch milliseconds", index, "ts")
    ts = int(raw)
    if ts < MIN_TS_MS:
        raise _bad("ts is before 2000-01-01; is it in seconds, not milliseconds?", index, "ts")
    if ts > now_ms + MAX_FUTURE_MS:
        raise _bad("ts is too far in the future", index, "ts")
    return ts


def parse_events(payload: bytes, *, now_ms: int) -> list[EventIn]:
    """The events of a payload; Invalid (BAD_JSON, INVALID_EVENT, TOO_MANY_EVENTS) otherwise."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:  # also raised for bytes that are not UTF-8
        raise Invalid("the payload is not valid JSON", code="BAD_JSON") from None
    if isinstance(document, dict):
        return [_event(document, None, now_ms)]
    if not isinstance(document, list):
        raise _bad("send an event object or a JSON array of them", None, None)
    if not document:
        raise _bad("the array holds no events", None, None)
    if len(document) > MAX_EVENTS:
        raise Invalid(
            f"more than {MAX_EVENTS} events in one payload",
            code="TOO_MANY_EVENTS",
            details={"count": len(document), "max": MAX_EVENTS},
        )
    return [_event(item, index, now_ms) for index, item in enumerate(document)]
