"""In-process periodic jobs (retention, offline detection, expiry) with clean shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from fleetcore.metrics import JOB_RUNS

log = structlog.get_logger(__name__)

JobFunc = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Job:
    name: str
    interval_s: float
    func: JobFunc
    task: asyncio.Task[None] | None = field(default=None)


class JobScheduler:
    """Runs each registered job every interval; a failing run is logged, not fatal."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._stopping = asyncio.Event()

    def register(self, name: str, interval_s: float, func: JobFunc) -> None:
        """Add a job; it starts with the scheduler."""
        if name in self._jobs:
            raise ValueError(f"job {name!r} is already registered")
        self._jobs[name] = _Job(name, interval_s, func)

    @property
    def names(self) -> list[str]:
        """The registered jobs."""
        return sorted(self._jobs)

    async def start(self) -> None:
        """Start every job's loop."""
        self._stopping.clear()
        for job in self._jobs.values():
            job.task = asyncio.create_task(self._loop(job), name=f"job:{job.name}")

    async def run_once(self, name: str) -> None:
        """Run one job now (used by the CLI and tests)."""
        await self._run(self._jobs[name])

    async def stop(self) -> None:
        """Let a run in progress finish, then stop every loop."""
        self._stopping.set()
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for job in self._jobs.values():
            job.task = None

    async def _loop(self, job: _Job) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=job.interval_s)
            except TimeoutError:
                await self._run(job)

    async def _run(self, job: _Job) -> None:
        try:
            await job.func()
        except Exception:
            JOB_RUNS.labels(job.name, "error").inc()
            log.exception("job_failed", job=job.name)
        else:
            JOB_RUNS.labels(job.name, "ok").inc()
