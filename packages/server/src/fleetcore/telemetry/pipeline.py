"""The ingest pipeline shared by HTTP and MQTT: bounded queue -> batcher -> writer -> handlers.

A submission is acknowledged (its future resolved) only after the batch holding it is
committed. Admission is bounded by readings waiting: past the bound, `submit` raises
Overloaded at once (HTTP answers 503 with Retry-After; MQTT delays its PUBACK), so memory
stays bounded and nothing accepted is ever dropped.

Group commit: one batcher task takes everything waiting (up to batch_size readings) and
writes it in one transaction, so submissions that arrive together share one commit and each
is answered when that commit is done. While a batch is being written the next one gathers by
itself. Before a write the batcher lingers for more, but only while more keeps coming: it
writes once a whole batch waits, once QUIET_TURNS turns of the event loop brought nothing new
(every request the process was serving has submitted: waiting longer only adds latency), or
once the oldest waiting submission has waited `flush_interval_s` (the bound on the added
latency, counted from its arrival, so what gathered during the last write is not held
again); 0 writes at once. A fixed wait instead (the batcher used to linger the whole
interval) cost every single-reading request that interval, and at 100 clients sending in
lockstep, most of the request rate.

Concurrency: enqueue runs on the event loop (no lock: it only appends and wakes the batcher);
only the batcher takes from `_waiting`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from fleetcore.db import storage_full
from fleetcore.errors import DomainError, InsufficientStorage, Unavailable
from fleetcore.telemetry import metrics
from fleetcore.telemetry.writer import DeviceReadings, Stored, TelemetryWriter, WriteResult

log = structlog.get_logger(__name__)

AfterCommit = Callable[[Sequence[Stored]], Awaitable[None]]
# Told each committed batch's submissions and how many readings of each were new (usage).
OnStored = Callable[[Sequence[DeviceReadings], Sequence[int]], None]


class Overloaded(Unavailable):
    """The pipeline is full; retry after a moment."""

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__(
            "ingest is busy; retry shortly",
            code="INGEST_OVERLOADED",
            headers={"Retry-After": str(retry_after_s)},
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one submission's readings."""

    stored: int
    duplicates: int


@dataclass(slots=True)
class _Pending:
    item: DeviceReadings
    future: asyncio.Future[Outcome]
    since: float  # the event loop's clock when it was accepted


# Turns of the event loop without a new submission after which the batch is written: a
# request's bytes read in one turn run its handler (to its submission) in the next.
QUIET_TURNS = 2


class IngestPipeline:
    """One batcher task writing through one writer; handlers run after each commit."""

    name = "telemetry-pipeline"

    def __init__(
        self,
        writer: TelemetryWriter,
        *,
        max_pending: int = 100_000,
        batch_size: int = 5_000,
        flush_interval_s: float = 0.02,
        handlers: Sequence[AfterCommit] = (),
    ) -> None:
        self.writer = writer
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.handlers = list(handlers)
        self.on_stored: OnStored | None = None
        self._waiting: deque[_Pending] = deque()  # accepted, not yet taken into a batch
        self._waiting_readings = 0
        self._accepted = 0  # submissions ever accepted: the linger sees whether more came
        self._wake = asyncio.Event()  # set when something is waiting (or on stop)
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Readings accepted into the queue and not yet committed."""
        return self._pending

    @property
    def waiting(self) -> int:
        """Readings accepted and not yet taken into a batch (the rest are being written)."""
        return self._waiting_readings

    def add_handler(self, handler: AfterCommit) -> None:
        """Run `handler` with each batch's new readings after the commit."""
        self.handlers.append(handler)

    async def start(self) -> None:
        """Start the batcher."""
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="telemetry-batcher")

    async def stop(self) -> None:
        """Refuse new work, write everything already accepted, then stop."""
        self._closing = True
        if self._task is not None:
            self._wake.set()  # a lingering batch goes at once (the linger sees _closing)
            await self._task
            self._task = None

    def check_room(self) -> None:
        """Raise Overloaded when a submission now would be refused for want of room."""
        if self._closing or self._task is None:
            raise Overloaded(retry_after_s=5)
        if self._pending >= self.max_pending:
            metrics.REJECTED.labels("overloaded").inc()
            raise Overloaded()

    def enqueue(self, item: DeviceReadings) -> asyncio.Future[Outcome]:
        """Accept a submission or raise Overloaded; the future resolves after the commit."""
        count = len(item.readings)
        if self._closing or self._task is None:
            raise Overloaded(retry_after_s=5)
        if self._pending + count > self.max_pending and self._pending > 0:
            metrics.REJECTED.labels("overloaded").inc(count)
            raise Overloaded()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending += count
        metrics.QUEUE_DEPTH.set(self._pending)
        self._waiting.append(_Pending(item, future, loop.time()))
        self._waiting_readings += count
        self._accepted += 1
        self._wake.set()
        return future

    async def submit(self, item: DeviceReadings) -> Outcome:
        """Enqueue and wait until the readings are committed."""
        return await self.enqueue(item)

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                if self._closing:  # everything accepted before stop() is written
                    break
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.flush_interval_s > 0 and not self._closing:
                await self._linger()
            batch, size = self._take()
            await self._flush(batch, size)
        try:
            await self.writer.settle()  # the last batch may have left its roll-ups deferred
        except Exception:  # still logged in the database: the next writer merges them
            log.exception("telemetry_settle_failed")

    async def _linger(self) -> None:
        """Wait for more while more keeps coming: until a whole batch waits, QUIET_TURNS
        turns of the loop bring nothing, or the oldest has waited flush_interval_s (or stop)."""
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0].since + self.flush_interval_s
        quiet = 0
        while (
            quiet < QUIET_TURNS
            and self._waiting_readings < self.batch_size
            and not self._closing
            and loop.time() < deadline
        ):
            accepted = self._accepted
            await asyncio.sleep(0)
            quiet = quiet + 1 if self._accepted == accepted else 0

    def _take(self) -> tuple[list[_Pending], int]:
        """The oldest waiting submissions, up to batch_size readings (at least one)."""
        batch: list[_Pending] = []
        size = 0
        waiting = self._waiting
        while waiting and (not batch or size < self.batch_size):
            pending = waiting.popleft()
            batch.append(pending)
            size += len(pending.item.readings)
        self._waiting_readings -= size
        return batch, size

    async def _flush(self, batch: list[_Pending], size: int) -> None:
        begin = time.perf_counter()
        try:
            # While more is queued, roll-ups and latest values may be merged with a later
            # batch's (far fewer upserts); the batch that empties the queue merges them all.
            busy = not self._closing and bool(self._waiting)
            result = await self.writer.write([p.item for p in batch], defer_rollups=busy)
        except Exception as exc:
            log.exception("telemetry_write_failed", readings=size)
            metrics.WRITE_FAILURES.inc()
            error: DomainError = (
                InsufficientStorage(
                    "the database's disk is full; the readings were not stored",
                    headers={"Retry-After": "60"},
                )
                if storage_full(exc)
                else Unavailable(
                    "the readings could not be stored; retry",
                    code="INGEST_WRITE_FAILED",
                    headers={"Retry-After": "1"},
                )
            )
            error.__cause__ = exc
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
        else:
            metrics.WRITE_SECONDS.observe(time.perf_counter() - begin)
            metrics.BATCH_SIZE.observe(size)
            metrics.STORED.inc(len(result.stored))
            metrics.DUPLICATES.inc(result.duplicates)
            self._resolve(batch, result)
            if self.on_stored is not None:
                self._count(batch, result)
            await self._after_commit(result)
        finally:
            self._pending -= size
            metrics.QUEUE_DEPTH.set(self._pending)

    @staticmethod
    def _resolve(batch: list[_Pending], result: WriteResult) -> None:
        for p, stored in zip(batch, result.stored_per_item, strict=True):
            if p.future.done():  # the submitter went away; the data is stored all the same
                continue
            p.future.set_result(Outcome(stored=stored, duplicates=len(p.item.readings) - stored))

    def _count(self, batch: list[_Pending], result: WriteResult) -> None:
        assert self.on_stored is not None
        try:  # counted after the commit, so a batch that failed is never counted
            self.on_stored([p.item for p in batch], result.stored_per_item)
        except Exception:
            log.exception("usage_count_failed")

    async def _after_commit(self, result: WriteResult) -> None:
        if not result.stored:
            return
        for handler in self.handlers:
            try:
                await handler(result.stored)
            except Exception:
                log.exception(
                    "after_commit_handler_failed", handler=getattr(handler, "__name__", "?")
                )
