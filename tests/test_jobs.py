"""The in-process job scheduler: runs on time, survives failures, stops cleanly."""

from __future__ import annotations

import asyncio

import pytest

from fleetcore.jobs import JobScheduler
from tests.support.wait import wait_until


async def test_jobs_run_repeatedly_and_survive_errors() -> None:
    scheduler = JobScheduler()
    runs: list[str] = []

    async def ok() -> None:
        runs.append("ok")

    async def broken() -> None:
        runs.append("broken")
        raise RuntimeError("boom")

    scheduler.register("ok", 0.01, ok)
    scheduler.register("broken", 0.01, broken)
    await scheduler.start()
    await wait_until(lambda: runs.count("ok") >= 3 and runs.count("broken") >= 3)
    await scheduler.stop()
    count = len(runs)
    # A clock at the same interval: three of its ticks are three chances for a stopped job.
    ticks: list[None] = []
    clock = JobScheduler()

    async def tick() -> None:
        ticks.append(None)

    clock.register("clock", 0.01, tick)
    await clock.start()
    await wait_until(lambda: len(ticks) >= 3)
    await clock.stop()
    assert len(runs) == count, "a job ran after stop()"


async def test_stop_waits_for_a_run_in_progress() -> None:
    scheduler = JobScheduler()
    finished = asyncio.Event()
    began = asyncio.Event()
    stop_asked = False

    async def slow() -> None:
        began.set()
        await wait_until(lambda: stop_asked)  # still running when stop() is called
        finished.set()

    scheduler.register("slow", 0.01, slow)
    await scheduler.start()
    await asyncio.wait_for(began.wait(), 5)
    stop_asked = True
    await scheduler.stop()
    assert finished.is_set()


def test_duplicate_job_name_refused() -> None:
    scheduler = JobScheduler()

    async def job() -> None:
        return None

    scheduler.register("a", 1, job)
    with pytest.raises(ValueError, match="already registered"):
        scheduler.register("a", 1, job)
