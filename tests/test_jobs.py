"""The in-process job scheduler: runs on time, survives failures, stops cleanly."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pytest

from fleetcore.db import Database
from fleetcore.jobs import JobScheduler
from tests.conftest import running_app
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


@pytest.mark.parametrize("ending", ["stop", "halt"])
async def test_stop_and_halt_wait_for_a_run_in_progress(ending: str) -> None:
    scheduler = JobScheduler()
    finished = asyncio.Event()
    began = asyncio.Event()
    asked = False

    async def slow() -> None:
        began.set()
        await wait_until(lambda: asked)  # still running when stop() or halt() is called
        finished.set()

    scheduler.register("slow", 0.01, slow)
    await scheduler.start()
    await asyncio.wait_for(began.wait(), 5)
    asked = True
    await (scheduler.stop() if ending == "stop" else scheduler.halt("slow"))
    assert finished.is_set()
    await scheduler.stop()


def test_duplicate_job_name_refused() -> None:
    scheduler = JobScheduler()

    async def job() -> None:
        return None

    scheduler.register("a", 1, job)
    with pytest.raises(ValueError, match="already registered"):
        scheduler.register("a", 1, job)


async def test_the_app_starts_no_job_on_a_shared_connection(
    db: Database, live_database: Database, tmp_path: Path
) -> None:
    # A test's shared connection allows no background writer: the app's scheduler starts no
    # loop there (its jobs would interleave savepoints with the requests'); on a live
    # database it does.
    assert not db.background_writes_allowed
    assert live_database.background_writes_allowed
    for database in (db, live_database):
        async with running_app(database, tmp_path) as app:
            assert "commands.expire" in app.state.jobs.names
            assert app.state.jobs.background_writes is database.background_writes_allowed


async def test_a_scheduler_without_background_writes_ticks_not_but_runs_once() -> None:
    paused, runs = JobScheduler(background_writes=False), []
    paused.register("paused", 0.01, partial(_note, runs))
    control, ticks = JobScheduler(), []
    control.register("control", 0.01, partial(_note, ticks))
    await paused.start()
    await control.start()
    await wait_until(lambda: len(ticks) >= 3)  # three chances for the paused job to tick
    await control.stop()
    assert runs == []
    await paused.run_once("paused")  # a caller's own run, in its turn
    assert len(runs) == 1
    await paused.stop()


async def test_a_halted_job_ticks_not_here_but_runs_once() -> None:
    scheduler, runs, ticks = JobScheduler(), [], []
    scheduler.register("halted", 0.01, partial(_note, runs))
    scheduler.register("control", 0.01, partial(_note, ticks))
    await scheduler.start()
    await wait_until(lambda: len(runs) >= 1)  # it ticked before
    await scheduler.halt("halted")
    count, seen = len(runs), len(ticks)
    await wait_until(lambda: len(ticks) >= seen + 3)  # three chances for the halted job
    assert len(runs) == count
    await scheduler.run_once("halted")
    assert len(runs) == count + 1
    await scheduler.stop()


async def _note(runs: list[None]) -> None:
    runs.append(None)
