"""The ingest pipeline shared by HTTP and MQTT: bounded queue -> batcher -> writer -> handlers.

A submission is acknowledged (its future resolved) only after the batch holding it is
committed. Admission is bounded by readings waiting: past the bound, `submit` raises
Overloaded at once (HTTP answers 503 with Retry-After; MQTT delays its PUBACK), so memory
stays bounded and nothing accepted is ever dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from fleetcore.db import storage_full
from fleetcore.errors import DomainError, InsufficientStorage, Unavailable
from fleetcore.telemetry import metrics
from fleetcore.telemetry.writer import DeviceReadings, Stored, TelemetryWriter, WriteResult

log = structlog.get_logger(__name__)

AfterCommit = Callable[[Sequence[Stored]], Awaitable[None]]


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
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        """Readings accepted into the queue and not yet committed."""
        return self._pending

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
            await self._queue.put(None)
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
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending += count
        metrics.QUEUE_DEPTH.set(self._pending)
        self._queue.put_nowait(_Pending(item, future))
        return future

    async def submit(self, item: DeviceReadings) -> Outcome:
        """Enqueue and wait until the readings are committed."""
        return await self.enqueue(item)

    async def _run(self) -> None:
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.item.readings)
            deadline = time.monotonic() + self.flush_interval_s
            while size < self.batch_size:
                remaining = deadline - time.monotonic()
                try:
                    nxt = (
                        self._queue.get_nowait()
                        if remaining <= 0
                        else await asyncio.wait_for(self._queue.get(), remaining)
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt.item.readings)
            await self._flush(batch, size)
        # Drain whatever was accepted before stop() (enqueue refuses new work by now).
        rest: list[_Pending] = []
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if pending is not None:
                rest.append(pending)
        if rest:
            await self._flush(rest, sum(len(p.item.readings) for p in rest))
        try:
            await self.writer.settle()  # the last batch may have left its roll-ups deferred
        except Exception:  # still logged in the database: the next writer merges them
            log.exception("telemetry_settle_failed")

    async def _flush(self, batch: list[_Pending], size: int) -> None:
        begin = time.perf_counter()
        try:
            # While more is queued, roll-ups and latest values may be merged with a later
            # batch's (far fewer upserts); the batch that empties the queue merges them all.
            busy = not self._closing and not self._queue.empty()
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
