"""Bytes on disk per stored reading: PostgreSQL (ts_num's partitions) and SQLite (the file).

N readings (5,000 series, one reading each every 10 s, time-major like live data) go into
ts_num by each database's bulk path, which lays rows and index out as the writer's
INSERT ... SELECT does; the size is then divided by N. PostgreSQL: pg_total_relation_size
(heap, TOAST, indexes, maps) of every partition. SQLite: the file after a WAL checkpoint.
The roll-ups and latest values the writer keeps on top are weighed apart, on a smaller
set written by TelemetryWriter itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
from tests.support.postgres import PostgresServer

from bench.telemetry_ingest import (
    DEVICES,
    KEYS,
    Row,
    asyncpg_dsn,
    make_devices,
    migrated,
    now_ms,
    value,
    writer_batch,
)
from fleetcore.db import Database, create_engine
from fleetcore.telemetry.writer import TelemetryWriter

READINGS = 2_000_000
WRITER_READINGS = 200_000
SERIES = DEVICES * KEYS
INTERVAL_MS = 10_000
TARGET_BYTES = 40


def batches(count: int) -> Iterator[list[Row]]:
    """`count` readings as batches of one timestamp for every series, 10 s apart."""
    steps = count // SERIES
    base = now_ms() - steps * INTERVAL_MS - 60_000
    for t in range(steps):
        yield [(s, base + t * INTERVAL_MS, value(t * SERIES + s)) for s in range(1, SERIES + 1)]


async def copy_pg(dsn: str, count: int) -> None:
    """COPY `count` readings into ts_num."""
    connection = await asyncpg.connect(dsn)
    try:
        for batch in batches(count):
            await connection.copy_records_to_table(
                "ts_num", records=batch, columns=["series_id", "ts", "value"]
            )
    finally:
        await connection.close()


def insert_sqlite(path: Path, count: int) -> None:
    """executemany `count` readings into ts_num, a transaction per batch."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=NORMAL")
        for batch in batches(count):
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO ts_num (series_id, ts, value) VALUES (?,?,?)", batch
            )
            connection.execute("COMMIT")
    finally:
        connection.close()


async def write(url: str, readings: int) -> None:
    """Store `readings` numbers through TelemetryWriter (raw rows, roll-ups, latest)."""
    database = Database(create_engine(url, pool_size=4))
    try:
        org_id, devices = await make_devices(database, DEVICES)
        writer = TelemetryWriter(database.engine)
        steps = readings // SERIES
        base = now_ms() - steps * INTERVAL_MS - 60_000
        for b in range(steps):
            await writer.write(writer_batch(org_id, devices, base + b * INTERVAL_MS))
    finally:
        await database.close()


async def pg_sizes(url: str, *, vacuum: bool = False) -> dict[str, int]:
    """Bytes of ts_num's partitions (all, heap, indexes) and of the roll-ups and latest;
    `vacuum` first compacts away the upserts' dead row versions (a short run updates each
    bucket many times in a few minutes; a running system's autovacuum reuses that space)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        if vacuum:
            await connection.execute("VACUUM FULL ts_rollup_1m, ts_rollup_1h, ts_latest")
        row = await connection.fetchrow(
            "SELECT sum(pg_total_relation_size(inhrelid)) AS total, "
            "sum(pg_relation_size(inhrelid)) AS heap, sum(pg_indexes_size(inhrelid)) AS indexes, "
            "count(*) AS partitions FROM pg_inherits WHERE inhparent = 'ts_num'::regclass"
        )
        others = await connection.fetchval(
            "SELECT pg_total_relation_size('ts_rollup_1m') + pg_total_relation_size('ts_rollup_1h')"
            " + pg_total_relation_size('ts_latest')"
        )
        stored = await connection.fetchval("SELECT count(*) FROM ts_num")
    finally:
        await connection.close()
    assert row is not None
    return {**{k: int(v) for k, v in row.items()}, "rollups_latest": int(others), "rows": stored}


def sqlite_sizes(path: Path) -> dict[str, int]:
    """The file's bytes after a checkpoint, and ts_num's own pages when dbstat is compiled in."""
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = int(connection.execute("SELECT count(*) FROM ts_num").fetchone()[0])
        try:
            table = connection.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name = 'ts_num'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB
            table = None
    sizes = {"file": path.stat().st_size, "rows": rows}
    if table is not None:
        sizes["ts_num"] = int(table)
    return sizes


def _per(bytes_: int, readings: int) -> float:
    return round(bytes_ / readings, 1)


async def _measure(server: PostgresServer, tmp: Path) -> dict[str, Any]:
    pg_raw, pg_writer = server.create_database("raw"), server.create_database("writer")
    lite_raw, lite_writer = tmp / "raw.db", tmp / "writer.db"
    for url in (pg_raw, pg_writer, f"sqlite+aiosqlite:///{lite_raw}"):
        await migrated(url)
    await migrated(f"sqlite+aiosqlite:///{lite_writer}")
    begin = time.perf_counter()
    await copy_pg(asyncpg_dsn(pg_raw), READINGS)
    insert_sqlite(lite_raw, READINGS)
    await write(pg_writer, WRITER_READINGS)
    await write(f"sqlite+aiosqlite:///{lite_writer}", WRITER_READINGS)
    seconds = time.perf_counter() - begin
    pg, pg_w = await pg_sizes(pg_raw), await pg_sizes(pg_writer, vacuum=True)
    lite, lite_w = sqlite_sizes(lite_raw), sqlite_sizes(lite_writer)
    assert pg["rows"] == lite["rows"] == READINGS, (pg["rows"], lite["rows"])
    assert pg_w["rows"] == lite_w["rows"] == WRITER_READINGS, (pg_w["rows"], lite_w["rows"])
    postgresql = {
        "ts_num_bytes_per_reading": _per(pg["total"], READINGS),
        "heap_bytes_per_reading": _per(pg["heap"], READINGS),
        "index_bytes_per_reading": _per(pg["indexes"], READINGS),
        "partitions": pg["partitions"],
        "writer_rollups_and_latest_bytes_per_reading": _per(
            pg_w["rollups_latest"], WRITER_READINGS
        ),
    }
    sqlite = {
        "file_bytes_per_reading": _per(lite["file"], READINGS),
        "writer_file_bytes_per_reading": _per(lite_w["file"], WRITER_READINGS),
    }
    if "ts_num" in lite:
        sqlite["ts_num_bytes_per_reading"] = _per(lite["ts_num"], READINGS)
    return {
        "postgresql": postgresql,
        "sqlite": sqlite,
        "target_bytes_per_reading_pg": TARGET_BYTES,
        "meets_target": postgresql["ts_num_bytes_per_reading"] <= TARGET_BYTES,
        "load_seconds": round(seconds, 1),
    }


def run() -> dict[str, Any]:
    """Write READINGS on each database, then weigh them."""
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(_measure(server, Path(tmp)))
    finally:
        server.stop()
    return {
        "name": "telemetry_storage",
        "readings": READINGS,
        "writer_readings": WRITER_READINGS,
        "series": SERIES,
        **figures,
        "note": "numbers (double precision), one row per reading, 10 s apart per series; "
        "roll-up bytes depend on that interval (a 1-minute bucket per 6 readings here), and a "
        "400 s writer run over-states the 1-hour and latest shares (one row per 40 readings)",
    }
