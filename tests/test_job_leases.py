"""Periodic jobs run once per tick across processes on PostgreSQL (fleetcore.job_leases).

Two schedulers in this process, then two real `fleetcore serve --role worker` processes, on
one throwaway PostgreSQL database: every tick of a job has exactly one run, and when one
process goes away the other runs every tick.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from fleetcore import migrate
from fleetcore.db import Database, create_engine
from fleetcore.job_leases import PostgresLeases, lock_key
from fleetcore.jobs import JobScheduler
from tests.support.faults import ServerProcess
from tests.support.http_clients import local_client
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_until

# A tick is skipped, by design, when the run before it overran it: 0.2 s ticks missed one
# when two other test processes held both cores, which says nothing about the leases.
INTERVAL_S = 0.5
# Real processes beside a loaded test run: two-second ticks, so that "every tick ran" is
# about the leases, not about both processes being starved of CPU for a whole tick (a
# process whose claim ends after the next boundary skips that tick, by design; with 1 s
# ticks a fresh-clone CI run with both cores busy missed one, 2026-12-07).
PROCESS_INTERVAL_S = 2.0


@pytest.fixture
async def leases_db(
    postgres_server: PostgresServer | None,
) -> AsyncIterator[tuple[str, AsyncEngine]]:
    """A fresh migrated database of the throwaway server, and an engine on it."""
    if postgres_server is None:
        pytest.skip("needs the throwaway PostgreSQL server")
    url = postgres_server.create_database(f"leases_{uuid.uuid4().hex[:8]}")
    engine = create_engine(url, pool_size=4)
    await migrate.upgrade(Database(engine))
    try:
        yield url, engine
    finally:
        await engine.dispose()


async def _runs(engine: AsyncEngine, job: str) -> list[tuple[int, str, bool]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT tick, holder, finished_at IS NOT NULL FROM job_runs "
                "WHERE name = :n ORDER BY tick"
            ),
            {"n": job},
        )
        return [(int(t), str(h), bool(f)) for t, h, f in rows]


def _contiguous(ticks: list[int]) -> bool:
    return ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def test_lock_keys_are_32_bit_and_differ() -> None:
    keys = {lock_key(name) for name in ("commands.expire", "presence.sweep", "rules.no-data")}
    assert len(keys) == 3
    assert all(-(2**31) <= k < 2**31 for k in keys)


async def test_two_schedulers_share_every_tick_once(leases_db: tuple[str, AsyncEngine]) -> None:
    url, engine = leases_db
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE probe (holder text NOT NULL)"))

    def recorder(holder: str):  # type: ignore[no-untyped-def]
        async def job() -> None:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO probe VALUES (:h)"), {"h": holder})

        return job

    schedulers = {h: JobScheduler(guard=PostgresLeases(url, holder=h)) for h in ("a", "b")}
    for holder, scheduler in schedulers.items():
        scheduler.register("probe", INTERVAL_S, recorder(holder))
        await scheduler.start()

    async def ticks_at_least(n: int) -> bool:
        return len(await _runs(engine, "probe")) >= n

    try:
        await wait_until(lambda: ticks_at_least(8), within=30)
        await schedulers["a"].stop()  # one process goes away mid-way
        before = len(await _runs(engine, "probe"))
        await wait_until(lambda: ticks_at_least(before + 6), within=30)
    finally:
        await schedulers["a"].stop()
        await schedulers["b"].stop()

    runs = await _runs(engine, "probe")
    ticks = [tick for tick, _, _ in runs]
    assert _contiguous(ticks), f"a tick was missed: {ticks}"
    assert all(finished for _, _, finished in runs)
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT holder, count(*) FROM probe GROUP BY holder"))
        executed = {str(holder): int(count) for holder, count in rows}
    claimed = {h: sum(1 for _, holder, _ in runs if holder == h) for h in ("a", "b")}
    # Each tick's one claim made exactly one execution, by the process that claimed it.
    assert executed == {h: n for h, n in claimed.items() if n}
    assert sum(executed.values()) == len(ticks)
    assert {holder for _, holder, _ in runs[before:]} == {"b"}


async def test_a_long_run_holds_the_job(leases_db: tuple[str, AsyncEngine]) -> None:
    url, _ = leases_db
    first, second = PostgresLeases(url, holder="first"), PostgresLeases(url, holder="second")
    try:
        async with first.claim("slow", 1) as mine:
            assert mine
            # Running past its tick: the next tick is not run beside it.
            async with second.claim("slow", 2) as theirs:
                assert not theirs
        async with second.claim("slow", 1) as again:
            assert not again, "a tick ran twice"
        async with second.claim("slow", 3) as next_tick:
            assert next_tick
    finally:
        await first.close()
        await second.close()


def _job_ok(metrics: str, job: str) -> float:
    found = re.search(
        rf'^fleetcore_job_runs_total\{{job="{re.escape(job)}",outcome="ok"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    return float(found.group(1)) if found else 0.0


async def test_two_worker_processes_run_each_tick_once(
    leases_db: tuple[str, AsyncEngine], tmp_path: Path
) -> None:
    url, engine = leases_db
    job = "recommendations.expire"
    workers = [
        ServerProcess(
            tmp_path / name,
            database_url=url,
            role="worker",
            recommendations_sweep_s=str(PROCESS_INTERVAL_S),
            log_level="info",
        )
        for name in ("w1", "w2")
    ]
    try:
        for worker in workers:
            await worker.start()

        async def ticks_at_least(n: int) -> bool:
            return len(await _runs(engine, job)) >= n

        await wait_until(lambda: ticks_at_least(6), within=60)
        holders = {f"{h.split(':')[0]}" for _, h, _ in await _runs(engine, job)}
        assert holders, "no tick was run"
        victim, survivor = workers
        victim.kill()  # SIGKILL mid-stream: its lock goes with its connection
        killed_at = len(await _runs(engine, job))
        await wait_until(lambda: ticks_at_least(killed_at + 5), within=60)

        runs = await _runs(engine, job)
        ticks = [tick for tick, _, _ in runs]
        assert _contiguous(ticks), f"a tick was missed: {ticks}"
        survivor_holder = f":{survivor.pid}"
        assert all(h.endswith(survivor_holder) for _, h, _ in runs[killed_at + 1 :])

        async def survivor_ran_exactly_its_claims() -> bool:
            async with local_client() as http:
                body = (await http.get(f"{survivor.base}/metrics", timeout=5)).text
            mine = [r for r in await _runs(engine, job) if r[1].endswith(survivor_holder) and r[2]]
            return _job_ok(body, job) == len(mine)

        # Counted by the process itself: one execution per tick it claimed, none beside.
        await wait_until(survivor_ran_exactly_its_claims, within=20, every=0.02)
    finally:
        for worker in workers:
            await worker.stop()
