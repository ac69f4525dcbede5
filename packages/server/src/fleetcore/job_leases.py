"""Periodic jobs run once per tick across processes (PostgreSQL): `job_runs` and a lock.

A job's ticks are the wall-clock multiples of its interval (tick = floor(now / interval)); the
scheduler of every process wakes at each tick boundary and asks `claim(name, tick)`.

Concurrency rule, in two parts:

1. **Exclusion**: `pg_try_advisory_lock(JOB_LOCK_CLASS, crc32(name))` on a connection held for
   the whole run. A second process never runs the same job at the same time, even when a run
   outlasts its tick; the lock goes with the connection, so a process that dies (SIGKILL,
   machine lost) frees it at once, without a lease time to guess.
2. **Once per tick**: under the lock, `INSERT INTO job_runs (name, tick) ... ON CONFLICT DO
   NOTHING`; the process whose row went in runs the tick. A lock alone cannot say this: a
   fast run releases it and a process waking a moment later in the same tick would take it
   and run again. The primary key (name, tick) can: a tick has one row, so one run.

A tick whose winner dies mid-run is not run again (its row exists); the next tick is. A run
longer than its interval makes the ticks it overlaps skip (the lock is held). SQLite needs
none of this: it serves one process, whose scheduler runs every tick itself.
"""

from __future__ import annotations

import os
import socket
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import BigInteger, String, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.advisory_locks import JOB_LEASE_CLASS
from fleetcore.db import Base, UTCDateTime, create_engine, utcnow

# The first key of the two-int advisory lock form: "FLJB". The one-bigint form other locks
# use (migrations, retention) is a different lock space in PostgreSQL.
JOB_LOCK_CLASS = JOB_LEASE_CLASS
KEEP_TICKS = 1000  # rows kept per job (history for operators and tests)


class JobRun(Base):
    """One claimed tick of one job; the row's existence is the claim."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tick: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(timezone=True))


def lock_key(name: str) -> int:
    """The job's advisory lock key (a signed 32-bit int)."""
    return int.from_bytes(zlib.crc32(name.encode()).to_bytes(4, "big"), "big", signed=True)


def default_holder() -> str:
    """This process, as job_runs names it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


class PostgresLeases:
    """The JobScheduler's guard on PostgreSQL (see the module docstring for the rule)."""

    def __init__(self, url: URL | str, *, holder: str | None = None) -> None:
        # Connections of its own: one is held through each run, and must never wait for
        # (or starve) the pool the jobs themselves use.
        self.engine = create_engine(url, pool_size=2)
        self.holder = holder or default_holder()

    async def close(self) -> None:
        """Close the guard's connections."""
        await self.engine.dispose()

    @asynccontextmanager
    async def claim(self, name: str, tick: int) -> AsyncIterator[bool]:
        """Yield True to the one process that runs `name` at `tick`; False to the others."""
        key = lock_key(name)
        async with self.engine.connect() as connection:
            locked = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": JOB_LOCK_CLASS, "k": key}
            )
            await connection.commit()
            if not locked:  # another process is running this job now
                yield False
                return
            try:
                claimed = await connection.execute(
                    text(
                        "INSERT INTO job_runs (name, tick, holder, started_at) "
                        "VALUES (:n, :t, :h, :at) ON CONFLICT DO NOTHING"
                    ),
                    {"n": name, "t": tick, "h": self.holder, "at": utcnow()},
                )
                won = claimed.rowcount == 1
                if won:
                    await connection.execute(
                        text("DELETE FROM job_runs WHERE name = :n AND tick < :t"),
                        {"n": name, "t": tick - KEEP_TICKS},
                    )
                await connection.commit()
                yield won
                if won:
                    await connection.execute(
                        text("UPDATE job_runs SET finished_at = :at WHERE name = :n AND tick = :t"),
                        {"n": name, "t": tick, "at": utcnow()},
                    )
                    await connection.commit()
            finally:
                await connection.rollback()
                await connection.execute(
                    text("SELECT pg_advisory_unlock(:c, :k)"), {"c": JOB_LOCK_CLASS, "k": key}
                )
                await connection.commit()
