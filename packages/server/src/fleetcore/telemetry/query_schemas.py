"""Reading telemetry: answers, and the parsing of times, key lists, intervals and cursors.

One time parser serves the API, the exports and the CLI: ISO 8601 (UTC when no offset is
given) or epoch milliseconds. Ranges are half-open, start <= ts < end.
"""

from __future__ import annotations

import base64
import functools
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from fleetcore.errors import Invalid
from fleetcore_protocol.telemetry import Kind

DEFAULT_SPAN_MS = 24 * 3_600_000
MAX_KEYS = 100
MAX_BUCKETS = 10_000
MAX_LISTED = 100  # rejected import lines listed in an answer
INTERVALS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}
Interval = Literal["1m", "5m", "15m", "1h", "1d"]
Agg = Literal["avg", "min", "max", "sum", "count", "first", "last"]
Order = Literal["asc", "desc"]
ExportFormat = Literal["csv", "parquet"]
ChartSource = Literal["raw", "1m", "1h", "1d"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = re.compile(r"^\d{1,15}$")
# "+01:00" in an unencoded query string arrives as " 01:00".
_LOST_PLUS = re.compile(r"^(.*T\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)$")


class Reading(BaseModel):
    """One stored value."""

    key: str
    ts: int
    value: Any


class ReadingsPage(BaseModel):
    """Raw readings in (ts, key) order, a page at a time."""

    device_id: uuid.UUID
    items: list[Reading]
    next_cursor: str | None = None


class Bucket(BaseModel):
    """One interval of an aggregated series; null where the interval holds no data."""

    ts: int
    values: dict[str, int | float | None]


class Aggregates(BaseModel):
    """Numeric keys aggregated per interval, every interval of the range present."""

    device_id: uuid.UUID
    interval: Interval
    agg: Agg
    start: int
    end: int
    buckets: list[Bucket]


class LatestValue(BaseModel):
    """The newest value of a key."""

    ts: int
    value: Any


class DeviceLatest(BaseModel):
    """GET /api/v1/devices/{device_id}/telemetry/latest."""

    device_id: uuid.UUID
    values: dict[str, LatestValue]


class ManyLatest(BaseModel):
    """GET /api/v1/telemetry/latest: the caller's devices among those asked for."""

    devices: dict[str, dict[str, LatestValue]]


class RejectedLine(BaseModel):
    """Why one line of an import was not stored."""

    line: int
    message: str


class ImportAnswer(BaseModel):
    """What an import did; at most 100 rejected lines are listed, rejected_count has them all."""

    rows: int
    stored: int
    duplicates: int
    rejected: list[RejectedLine]
    rejected_count: int


@dataclass(slots=True)
class ImportReport:
    """What an import did so far."""

    rows: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: list[RejectedLine] = field(default_factory=list)
    rejected_count: int = 0

    def reject(self, line: int, message: str) -> None:
        """Count a refused line; the first MAX_LISTED are kept with their reason."""
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append(RejectedLine(line=line, message=message))

    def answer(self) -> ImportAnswer:
        """The API answer."""
        return ImportAnswer(
            rows=self.rows,
            stored=self.stored,
            duplicates=self.duplicates,
            rejected=sorted(self.rejected, key=lambda r: r.line),
            rejected_count=self.rejected_count,
        )


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return int(time.time() * 1000)


@functools.lru_cache(maxsize=64)
def _iso_day(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).date().isoformat()


def ms_to_iso(ts: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds and a Z (fast: exports call it
    once per row)."""
    day, rest = divmod(ts, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{_iso_day(day)}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def parse_time(value: str, *, field: str) -> int:
    """ISO 8601 (UTC if no offset) or epoch milliseconds, as epoch ms; Invalid naming `field`."""
    text = value.strip()
    if _MS.match(text):
        return int(text)
    lost = _LOST_PLUS.match(text)
    if lost:
        text = f"{lost.group(1)}+{lost.group(2)}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid(
            f"{field} must be an ISO 8601 time or epoch milliseconds",
            code="INVALID_TIME",
            details={"field": field, "value": value[:64]},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def time_range(
    start: str | None, end: str | None, *, now: int | None = None, span_ms: int = DEFAULT_SPAN_MS
) -> tuple[int, int]:
    """[start, end) in epoch ms; end defaults to now and start to `span_ms` before end."""
    end_ms = parse_time(end, field="end") if end else (now if now is not None else now_ms())
    start_ms = parse_time(start, field="start") if start else end_ms - span_ms
    if start_ms > end_ms:
        raise Invalid("start is after end", code="INVALID_RANGE", details={"field": "start"})
    return start_ms, end_ms


def parse_keys(keys: str | None) -> tuple[str, ...]:
    """A comma-separated key list, blanks and repeats dropped; empty means every key."""
    names = tuple(dict.fromkeys(k.strip() for k in (keys or "").split(",") if k.strip()))
    if len(names) > MAX_KEYS:
        raise Invalid(
            f"at most {MAX_KEYS} keys at a time", code="TOO_MANY_KEYS", details={"field": "keys"}
        )
    return names


def parse_ids(ids: str, *, limit: int) -> list[uuid.UUID]:
    """A comma-separated list of at most `limit` UUIDs, repeats dropped."""
    parts = list(dict.fromkeys(p.strip() for p in ids.split(",") if p.strip()))
    if len(parts) > limit:
        raise Invalid(
            f"at most {limit} device ids at a time",
            code="TOO_MANY_IDS",
            details={"field": "device_ids"},
        )
    try:
        return [uuid.UUID(p) for p in parts]
    except ValueError:
        raise Invalid(
            "device_ids must be comma-separated UUIDs",
            code="INVALID_ID",
            details={"field": "device_ids"},
        ) from None


def encode_cursor(ts: int, key: str, kind: Kind) -> str:
    """An opaque cursor after the reading (ts, key, kind)."""
    raw = orjson.dumps([ts, key, int(kind)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, Kind]:
    """The (ts, key, kind) a cursor points after; Invalid if tampered with."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, key, kind = orjson.loads(raw)
        if isinstance(ts, int) and not isinstance(ts, bool) and isinstance(key, str):
            return ts, key, Kind(kind)
    except (ValueError, TypeError):
        pass
    raise Invalid("the cursor is not valid", code="INVALID_CURSOR", details={"field": "cursor"})


def bucket_range(start: int, end: int, width: int) -> tuple[int, int]:
    """First bucket start and the exclusive end of the buckets covering [start, end)."""
    first = start - start % width
    if end <= start:
        return first, first
    last = (end - 1) - (end - 1) % width
    count = (last - first) // width + 1
    if count > MAX_BUCKETS:
        raise Invalid(
            f"{count} buckets; at most {MAX_BUCKETS}: shorten the range or widen the interval",
            code="TOO_MANY_BUCKETS",
            details={"field": "interval", "buckets": count},
        )
    return first, last + width


class ChartSeries(BaseModel):
    """One key on a chart, column-wise: each bucket holding data, with its extremes."""

    ts: list[int]
    min: list[float]
    max: list[float]
    avg: list[float]


class Chart(BaseModel):
    """Numeric keys downsampled to a chart's width: at most `width` buckets of `step_ms`, each
    with min, max and mean, so a one-reading spike survives; buckets without data left out."""

    device_id: uuid.UUID
    start: int
    end: int
    step_ms: int
    source: ChartSource
    series: dict[str, ChartSeries]
