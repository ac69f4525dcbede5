"""The dead-letter sink: refused device payloads are counted at once and stored in batches.

`record` is what the broker's hot path calls: synchronous, no I/O, O(1). It counts the dead
letter in `fleetcore_dead_letters_total{transport, reason}` and appends a row to a bounded
buffer; a background task writes the buffer in batches (one transaction each) every
`flush_interval_s`, or sooner once `batch_size` rows wait. When the buffer is full (the
database has been unreachable for a while, or a flood of garbage), further dead letters are
still counted but not stored: each one increments `fleetcore_dead_letters_dropped_total`, and
a burst of drops is logged once when it starts (and its size once when it ends), never once
per record. A database error leaves the rows buffered for the next tick; rows the
database refuses outright (a device or organization deleted meanwhile) are dropped one by
one, so a bad row cannot block the rest. `stop()` writes everything recorded before it.

With `rate_per_s` set (the app sets it), rows are stored at that rate per sender (a device,
or the client address of an anonymous connection), bursts up to `burst`; beyond it a dead
letter is counted in `fleetcore_dead_letters_suppressed_total` and not stored, so one
sender's flood costs a counter, not a table.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import uuid
from collections import deque
from itertools import islice
from typing import Any, Literal

import structlog
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError

from fleetcore.buckets import KeyedBuckets
from fleetcore.db import Database, utcnow
from fleetcore.deadletters.models import (
    EXCERPT_BYTES,
    MAX_DETAIL,
    MAX_REASON,
    MAX_TOPIC,
    DeadLetter,
)

log = structlog.get_logger(__name__)

Transport = Literal["mqtt", "http"]

DEAD_LETTERS = Counter(
    "fleetcore_dead_letters_total",
    "Device payloads refused as unusable, by transport and reason.",
    ["transport", "reason"],
)
DROPPED = Counter(
    "fleetcore_dead_letters_dropped_total",
    "Dead letters counted but not stored (buffer full, database refused, or after stop).",
)
SUPPRESSED = Counter(
    "fleetcore_dead_letters_suppressed_total",
    "Dead letters counted but not stored: their sender was over its dead-letter rate.",
    ["transport", "reason"],
)
WRITE_FAILURES = Counter(
    "fleetcore_dead_letters_write_failures_total",
    "Dead-letter batches the database did not take (kept and retried on the next tick).",
)

# Refused by the database as data (not an outage): retrying the same row cannot succeed.
_ROW_ERRORS = (IntegrityError, DataError)


def excerpt(payload: bytes) -> str:
    """The first EXCERPT_BYTES of a payload as text; bad UTF-8 and NUL (which PostgreSQL text
    refuses) become U+FFFD, and a character cut in half at the end is left out."""
    head = bytes(payload[:EXCERPT_BYTES])
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return decoder.decode(head, final=len(payload) <= EXCERPT_BYTES).replace("\x00", "\ufffd")


def _text(value: str, limit: int) -> str:
    return value[:limit].replace("\x00", "\ufffd")


class DeadLetterSink:
    """Buffers dead letters in memory and writes them in batches; a lifespan component."""

    name = "dead-letters"

    def __init__(
        self,
        database: Database,
        *,
        max_buffered: int = 10_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        rate_per_s: float | None = None,
        burst: int = 100,
    ) -> None:
        self.database = database
        self._rates = None if rate_per_s is None else KeyedBuckets(rate_per_s, burst)
        self.max_buffered = max_buffered
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._rows: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._burst_dropped = 0  # drops since the buffer last had room
        self._failing = False  # the last write failed (log the first failure only)

    @property
    def buffered(self) -> int:
        """Dead letters recorded and not yet written."""
        return len(self._rows)

    def record(
        self,
        *,
        organization_id: uuid.UUID | None,
        device_id: uuid.UUID | None,
        transport: Transport,
        topic: str | None,
        reason: str,
        detail: str,
        payload: bytes,
        source: str | None = None,
    ) -> None:
        """Count a refused payload and buffer it for writing; never blocks, never raises.

        Call it from the event loop's thread. `reason` is a short fixed code (it labels a
        metric): bad_json, wrong_type, oversize, unknown_topic, rate_limited, ...
        `source` names the sender for the rate (default: the device).
        """
        DEAD_LETTERS.labels(transport, reason).inc()
        sender = source or str(device_id or "anonymous")
        if self._rates is not None and not self._rates.take(sender):
            SUPPRESSED.labels(transport, reason).inc()
            return
        if self._stopped or len(self._rows) >= self.max_buffered:
            self._drop()
            return
        if self._burst_dropped:
            log.warning("dead_letters_dropped", count=self._burst_dropped)
            self._burst_dropped = 0
        self._rows.append(
            {
                "organization_id": organization_id,
                "device_id": device_id,
                "transport": transport,
                "topic": None if topic is None else _text(topic, MAX_TOPIC),
                "reason": _text(reason, MAX_REASON),
                "detail": _text(detail, MAX_DETAIL),
                "payload_excerpt": excerpt(payload),
                "payload_size": len(payload),
                "received_at": utcnow(),
            }
        )
        if len(self._rows) >= self.batch_size:
            self._wake.set()

    def _drop(self) -> None:
        DROPPED.inc()
        if not self._burst_dropped:
            log.warning(
                "dead_letters_dropping",
                buffered=len(self._rows),
                stopped=self._stopped,
                note="dead letters are counted but not stored until the buffer drains",
            )
        self._burst_dropped += 1

    async def start(self) -> None:
        """Start the background writer."""
        self._stopped = False
        self._task = asyncio.create_task(self._run(), name="dead-letter-writer")

    async def stop(self) -> None:
        """Stop the writer and write everything recorded so far (what fails is counted lost)."""
        self._stopped = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self.flush()
        if self._rows:
            lost = len(self._rows)
            self._rows.clear()
            DROPPED.inc(lost)
            log.error("dead_letters_lost_at_stop", count=lost)

    async def _run(self) -> None:
        while not self._stopped:
            with contextlib.suppress(TimeoutError):  # the tick: flush what is waiting
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if self._stopped:
                break  # stop() writes the rest
            await self.flush()

    async def flush(self) -> int:
        """Write what is buffered now, a batch per transaction; returns the rows written.

        A database error is logged and the rows stay buffered for the next call.
        """
        written = 0
        async with self._lock:
            while self._rows:
                batch = list(islice(self._rows, self.batch_size))
                try:
                    written += await self._write_batch(batch)
                except Exception:
                    WRITE_FAILURES.inc()
                    if not self._failing:
                        log.exception("dead_letters_write_failed", buffered=len(self._rows))
                    self._failing = True
                    break
                if self._failing:
                    log.info("dead_letters_write_recovered", buffered=len(self._rows))
                    self._failing = False
        return written

    async def _write_batch(self, batch: list[dict[str, Any]]) -> int:
        """Insert a batch and take it off the buffer; rows the database refuses are dropped."""
        try:
            await self._insert(batch)
        except _ROW_ERRORS:
            return await self._write_one_by_one(batch)
        for _ in batch:
            self._rows.popleft()
        return len(batch)

    async def _write_one_by_one(self, batch: list[dict[str, Any]]) -> int:
        written = 0
        for row in batch:
            try:
                await self._insert([row])
                written += 1
            except _ROW_ERRORS as exc:
                DROPPED.inc()
                log.warning(
                    "dead_letter_refused_by_database",
                    reason=row["reason"],
                    device_id=str(row["device_id"]),
                    error=str(exc.orig)[:300],
                )
            self._rows.popleft()  # written or refused: either way not retried
        return written

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with self.database.session() as session:
            await session.execute(insert(DeadLetter), rows)
            await session.commit()
