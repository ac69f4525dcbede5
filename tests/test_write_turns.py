"""Database.write_turn: on SQLite this process's writers take turns, in arrival order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from fleetcore.db import Database


async def test_writers_on_sqlite_take_turns_in_arrival_order(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    try:
        async with database.session(write=True) as session:
            await session.execute(text("CREATE TABLE t (n INTEGER)"))
            await session.commit()
        log: list[str] = []
        inside = 0

        async def writer(n: int) -> None:
            nonlocal inside
            async with database.write_turn():
                inside += 1
                log.append(f"in {n} ({inside} inside)")
                async with database.session() as session:
                    await session.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
                    await asyncio.sleep(0)  # others get the loop while this one holds its turn
                    await session.commit()
                inside -= 1

        await asyncio.gather(*(writer(n) for n in range(5)))
        assert log == [f"in {n} (1 inside)" for n in range(5)]
        async with database.session() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar() == 5
    finally:
        await database.engine.dispose()


async def test_a_shared_test_connection_needs_no_turns(db: Database) -> None:
    # Bound to one connection (tests), or on PostgreSQL: a no-op that never blocks.
    async with db.write_turn(), db.write_turn():
        pass
