"""Chunked deletes: at most `chunk_rows` rows per short transaction, until none is left.

PostgreSQL deletes a chunk by ctid (a TID scan: the cheapest way to delete a bounded set),
SQLite by primary key. Between chunks SQLite rests at least 100 ms and as long as the chunk
took, so a large purge holds its single write lock at most half the time and the ingest
writer is never starved (the telemetry retention rule, fleetcore.telemetry.retention);
PostgreSQL deletes take row locks only, which inserts do not wait on.

One runner at a time: on PostgreSQL a session advisory lock held for the whole run (the job
leases already make one process run each tick; this also keeps a CLI or test run out).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

from fleetcore.advisory_locks import LockKey
from fleetcore.db import Database

RUNNER_LOCK_KEY = LockKey.HOUSEKEEPING


def delete_chunk(
    table: str, condition: str, *, dialect: str, types: Mapping[str, TypeEngine[Any]]
) -> TextClause:
    """DELETE of at most :n rows of `table` matching `condition` (our constants, not input);
    `types` gives the type of each parameter the condition may use."""
    victims = f"FROM {table} WHERE {condition} LIMIT :n"  # constant names, never input
    if dialect == "postgresql":
        sql = f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid {victims}))"  # noqa: S608
    else:
        sql = f"DELETE FROM {table} WHERE id IN (SELECT id {victims})"  # noqa: S608
    used = [bindparam(name, type_=kind) for name, kind in types.items() if f":{name}" in condition]
    return text(sql).bindparams(*used)


async def delete_all(
    database: Database, statement: TextClause, params: dict[str, Any], *, chunk_rows: int
) -> int:
    """Run `statement` chunk after chunk until a chunk deletes fewer than `chunk_rows`."""
    total = 0
    while True:
        begin = time.monotonic()
        async with database.session(write=True) as session:
            result = await session.execute(statement, {**params, "n": chunk_rows})
            await session.commit()
        deleted = int(result.rowcount or 0)  # type: ignore[attr-defined]
        total += deleted
        if deleted < chunk_rows:
            return total
        if database.dialect == "sqlite":
            await asyncio.sleep(max(0.1, time.monotonic() - begin))


@asynccontextmanager
async def single_runner(database: Database) -> AsyncIterator[bool]:
    """On PostgreSQL, a session advisory lock; yields False when another process holds it."""
    if database.dialect != "postgresql":
        yield True  # one process serves a SQLite file
        return
    async with database.engine.connect() as connection:
        got = bool(
            (
                await connection.exec_driver_sql(
                    "SELECT pg_try_advisory_lock($1)", (RUNNER_LOCK_KEY,)
                )
            ).scalar_one()
        )
        await connection.commit()
        try:
            yield got
        finally:
            if got:
                await connection.exec_driver_sql(
                    "SELECT pg_advisory_unlock($1)", (RUNNER_LOCK_KEY,)
                )
                await connection.commit()
