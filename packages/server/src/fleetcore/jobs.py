"""Periodic jobs (retention, offline detection, expiry) with clean shutdown.

Every job runs at the wall-clock multiples of its interval (its ticks). With a guard
(PostgreSQL: fleetcore.job_leases) a tick of a cluster-wide job is run by one process of
all those that wake for it; per-process jobs (state held in this process's memory) and
every job without a guard (SQLite: one process) run at each tick here.

Jobs are background writers: on a database that allows none (a test's shared connection,
Database.background_writes_allowed) the scheduler starts no loop; `run_once` still runs a
job when the caller asks, in the caller's own turn. `halt` stops one job's ticks here, for a
caller that runs the job itself between steps that a tick must not come between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from fleetcore.metrics import JOB_RUNS

log = structlog.get_logger(__name__)

JobFunc = Callable[[], Awaitable[None]]


class JobGuard(Protocol):
    """Decides which process runs a tick (fleetcore.job_leases.PostgresLeases)."""

    def claim(self, name: str, tick: int) -> AbstractAsyncContextManager[bool]:
        """Enter to learn whether this process runs `name` at `tick`; exit when it is done."""
        ...

    async def close(self) -> None:
        """Release what the guard holds."""
        ...


@dataclass(slots=True)
class _Job:
    name: str
    interval_s: float
    func: JobFunc
    per_process: bool
    task: asyncio.Task[None] | None = field(default=None)
    halted: bool = False
    # Held while a tick runs the job: halt() waits on it for a run in progress.
    ticking: asyncio.Lock = field(default_factory=asyncio.Lock)


class JobScheduler:
    """Runs each registered job at every tick of its interval; a failing run is logged."""

    def __init__(self, guard: JobGuard | None = None, *, background_writes: bool = True) -> None:
        self.guard = guard
        self.background_writes = background_writes
        self._jobs: dict[str, _Job] = {}
        self._stopping = asyncio.Event()

    def register(
        self, name: str, interval_s: float, func: JobFunc, *, per_process: bool = False
    ) -> None:
        """Add a job; it starts with the scheduler. `per_process`: it works on this process's
        own memory, so every process runs it (no guard)."""
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already registered")
        self._jobs[name] = _Job(name, interval_s, func, per_process)

    def unregister(self, name: str) -> None:
        """Remove a job that is not started (the lifespan drops jobs of other roles)."""
        job = self._jobs.pop(name)
        if job.task is not None:
            raise RuntimeError(f"job {name!r} is running")

    @property
    def names(self) -> list[str]:
        """The registered jobs."""
        return sorted(self._jobs)

    async def start(self) -> None:
        """Start every job's loop (none where background writes are not allowed)."""
        if not self.background_writes:
            log.info("jobs_not_started", reason="no background writers on a shared connection")
            return
        self._stopping.clear()
        for job in self._jobs.values():
            job.task = asyncio.create_task(self._loop(job), name=f"job:{job.name}")

    async def run_once(self, name: str) -> None:
        """Run one job now, unguarded (used by the CLI and tests)."""
        await self._run(self._jobs[name])

    async def halt(self, name: str) -> None:
        """No more ticks of `name` here; returns once a run in progress has ended. `run_once`
        still runs it."""
        job = self._jobs[name]
        job.halted = True
        async with job.ticking:
            pass

    async def stop(self) -> None:
        """Let a run in progress finish, then stop every loop; release the guard."""
        self._stopping.set()
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._jobs.values():
            job.task = None
        if self.guard is not None:
            await self.guard.close()

    async def _loop(self, job: _Job) -> None:
        last = -1
        while not self._stopping.is_set():
            now = time.time()
            # The next boundary; never the same tick twice (a timer may fire a hair early).
            tick = max(int(now // job.interval_s) + 1, last + 1)
            try:
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=max(0.0, tick * job.interval_s - now)
                )
            except TimeoutError:
                last = tick
                if job.halted:
                    continue
                # No await between the check and taking the lock: halt() either set the flag
                # before the check or waits here for this run.
                async with job.ticking:
                    await self._tick(job, tick)

    async def _tick(self, job: _Job, tick: int) -> None:
        if self.guard is None or job.per_process:
            await self._run(job)
            return
        try:
            async with self.guard.claim(job.name, tick) as mine:
                if mine:
                    await self._run(job)
                else:
                    JOB_RUNS.labels(job.name, "skipped").inc()  # another process has it
        except Exception:
            # Database unreachable: nobody can claim the tick; the next one tries again.
            JOB_RUNS.labels(job.name, "error").inc()
            log.exception("job_claim_failed", job=job.name, tick=tick)

    async def _run(self, job: _Job) -> None:
        try:
            await job.func()
        except Exception:
            JOB_RUNS.labels(job.name, "error").inc()
            log.exception("job_failed", job=job.name)
        else:
            JOB_RUNS.labels(job.name, "ok").inc()
