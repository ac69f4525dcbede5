"""Bytes per reading before and after compaction, the encodings weighed, and the rate.

A day of 10-second numeric readings of SERIES series is copied (binary COPY) into ts_num's
daily partition, weighed, compacted by `run_compaction` (the job's own code) and weighed
again: ts_num_packed with its TOAST table and index, plus what is left of ts_num (the day's
partition is dropped). Two kinds of values: realistic sensor values (temperatures with two
decimals on a drifting signal, stamps with a few ms of jitter), and the worst case of random
full-precision doubles.

The packed rows are then rewritten into the encodings that were not chosen, to weigh them on
the same readings: the same arrays with lz4 instead of pglz, one row per series and day
instead of hour, and a self-encoded bytea (numpy: delta stamps; values as delta-coded
scaled integers when every value of the block is exactly int/10^k, else byte-shuffled
float64; zlib). SQLite: the same day (fewer series) loaded as its writer stores a batch and
compacted into zlib'd JSON hours (telemetry/sqlite_packing.py, which gives the encodings
weighed there), on a new file (auto_vacuum INCREMENTAL: the freed pages go back) and on
one created before that (NONE: the file keeps its size, the pages wait for new readings).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
from tests.support.postgres import PostgresServer

from bench.telemetry_ingest import asyncpg_dsn, make_devices, now_ms
from bench.telemetry_longrange import load_sqlite
from fleetcore import migrate
from fleetcore.db import Database, create_engine
from fleetcore.telemetry.compaction import cutoff_for, run_compaction
from fleetcore.telemetry.models import Series, TelemetryKey
from fleetcore.telemetry.partitions import DAY_MS, ensure_partitions
from fleetcore.telemetry.queries import SeriesRef, read_rows
from fleetcore_protocol.telemetry import Kind

SERIES = 400
PER_DAY = 8_640  # one reading every 10 s
READINGS = SERIES * PER_DAY
TARGET_COMPACTED = 12
TARGET_RAW = 40
READ_ROUNDS = 15
SQLITE_SERIES = 100  # SQLite's day: fewer series, loaded through Python


def _day(rng: np.random.Generator, *, realistic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(stamps offsets in the day, values) of one series."""
    stamps = np.arange(PER_DAY, dtype=np.int64) * 10_000 + 5_000
    if not realistic:
        return stamps, rng.random(PER_DAY) * 2_000 - 1_000
    stamps += rng.integers(-20, 21, PER_DAY)
    drift = np.cumsum(rng.normal(0, 0.02, PER_DAY))
    daily = 3 * np.sin(np.arange(PER_DAY) / PER_DAY * 2 * np.pi)
    values = np.round(20 + daily + drift + rng.normal(0, 0.05, PER_DAY), 2)
    return stamps, values


def encode_bytea(offsets: np.ndarray, values: np.ndarray) -> tuple[bytes, bytes]:
    """The self-encoded alternative: zlib'd delta stamps, values as zlib'd deltas of scaled
    integers when exact (tag k: value = int / 10^k), else byte-shuffled doubles (tag 255)."""
    stamps = zlib.compress(np.diff(offsets, prepend=0).astype(np.int32).tobytes(), 6)
    for k in range(7):
        scaled = np.round(values * 10**k)
        if np.all(np.abs(scaled) < 2**52) and np.array_equal(scaled / 10**k, values):
            deltas = np.diff(scaled.astype(np.int64), prepend=0)
            if np.all(np.abs(deltas) < 2**31):
                shuffled = deltas.astype(np.int32).view(np.uint8).reshape(-1, 4).T.tobytes()
                return stamps, bytes([k]) + zlib.compress(shuffled, 6)
    shuffled = values.view(np.uint8).reshape(-1, 8).T.tobytes()
    return stamps, b"\xff" + zlib.compress(shuffled, 6)


async def _size(connection: asyncpg.Connection, table: str) -> int:
    return int(await connection.fetchval("SELECT pg_total_relation_size($1::regclass)", table))


async def _raw_size(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            "WHERE inhparent = 'ts_num'::regclass"
        )
    )


async def _alternatives(connection: asyncpg.Connection) -> dict[str, float]:
    """The packed readings rewritten as the encodings not chosen; bytes per reading."""
    out: dict[str, float] = {}
    await connection.execute(
        "CREATE TABLE alt_lz4 (LIKE ts_num_packed INCLUDING ALL);"
        "ALTER TABLE alt_lz4 ALTER COLUMN offs SET COMPRESSION lz4, "
        "ALTER COLUMN vals SET COMPRESSION lz4;"
        # Slices make new arrays: a compressed value copied as it is keeps its compression.
        "INSERT INTO alt_lz4 SELECT series_id, block, n, offs[1:cardinality(offs)], "
        "vals[1:cardinality(vals)] FROM ts_num_packed"
    )
    out["arrays_lz4_hour"] = round(await _size(connection, "alt_lz4") / READINGS, 2)
    await connection.execute(
        "CREATE TABLE alt_day (LIKE ts_num_packed INCLUDING ALL);"  # noqa: S608 (constants)
        "INSERT INTO alt_day SELECT series_id, d, count(*), "
        "array_agg((ts - d)::integer ORDER BY ts), "
        "array_agg(v ORDER BY ts) FROM (SELECT p.series_id, p.block + u.o AS ts, u.v, "
        f"p.block - p.block % {DAY_MS} AS d FROM ts_num_packed p, "
        "unnest(p.offs, p.vals) AS u (o, v)) AS r GROUP BY series_id, d"
    )
    out["arrays_pglz_day"] = round(await _size(connection, "alt_day") / READINGS, 2)
    records = [
        (sid, block, *encode_bytea(np.array(offs, dtype=np.int64), np.array(vals)))
        for sid, block, offs, vals in await connection.fetch(
            "SELECT series_id, block, offs, vals FROM ts_num_packed"
        )
    ]
    await connection.execute(
        "CREATE TABLE alt_bytea (series_id integer, block bigint, stamps bytea, vals bytea, "
        "PRIMARY KEY (series_id, block))"
    )
    await connection.copy_records_to_table("alt_bytea", records=records)
    out["bytea_numpy_zlib_hour"] = round(await _size(connection, "alt_bytea") / READINGS, 2)
    return out


async def _read_ms(url: str, series_id: int, start: int) -> float:
    """Median ms to read one series' whole day as a raw page (read_rows, as the API)."""
    engine = create_engine(url, pool_size=1)
    try:
        ref = [SeriesRef(series_id, "k", Kind.NUMBER)]
        times = []
        async with engine.connect() as connection:
            for _ in range(READ_ROUNDS):
                begin = time.perf_counter()
                got = await read_rows(connection, ref, start, start + DAY_MS, limit=PER_DAY)
                times.append((time.perf_counter() - begin) * 1000)
                assert len(got) == PER_DAY
        return round(statistics.median(times), 1)
    finally:
        await engine.dispose()


async def _one_case(server: PostgresServer, *, realistic: bool) -> dict[str, Any]:
    url = server.create_database("real" if realistic else "random")
    database = Database(create_engine(url, pool_size=4))
    now = now_ms()
    day = cutoff_for(now, 2) - DAY_MS  # a closed day
    try:
        await migrate.upgrade(database)
        await ensure_partitions(database.engine, days_ahead=2, now_ms=day)
        org_id, devices = await make_devices(database, 1)
    finally:
        await database.close()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            "INSERT INTO ts_keys (name, kind) SELECT 'k' || g, 1 FROM generate_series(1, $1) g",
            SERIES,
        )
        await connection.execute(
            "INSERT INTO ts_series (device_id, key_id, organization_id) "
            "SELECT $1, id, $2 FROM ts_keys ORDER BY id",
            devices[0],
            org_id,
        )
        ids = [r[0] for r in await connection.fetch("SELECT id FROM ts_series ORDER BY id")]
        rng = np.random.default_rng(21)
        for sid in ids:
            stamps, values = _day(rng, realistic=realistic)
            records = list(
                zip([sid] * PER_DAY, (stamps + day).tolist(), values.tolist(), strict=True)
            )
            await connection.copy_records_to_table(
                "ts_num", records=records, columns=["series_id", "ts", "value"]
            )
        await connection.execute("VACUUM ANALYZE ts_num")
        raw = await _raw_size(connection)
    finally:
        await connection.close()
    read_raw = await _read_ms(url, ids[0], day)
    database = Database(create_engine(url, pool_size=4))
    try:
        report = await run_compaction(database.engine, after_days=2, now_ms=now)
    finally:
        await database.close()
    assert report.readings == READINGS, report
    read_packed = await _read_ms(url, ids[0], day)
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        packed = await _size(connection, "ts_num_packed")
        left = await _raw_size(connection)
        toast = int(
            await connection.fetchval(
                "SELECT pg_total_relation_size(reltoastrelid) FROM pg_class "
                "WHERE relname = 'ts_num_packed'"
            )
        )
        alternatives = await _alternatives(connection)
    finally:
        await connection.close()
    result: dict[str, Any] = {
        "uncompacted_bytes_per_reading": round(raw / READINGS, 1),
        "compacted_bytes_per_reading": round((packed + left) / READINGS, 2),
        "compacted_toast_share": round(toast / max(1, packed), 2),
        "raw_bytes_left_after": left,
        "partitions_dropped": report.partitions_dropped,
        "compaction_readings_per_s": round(report.rate),
        "encodings_bytes_per_reading": {
            "arrays_pglz_hour (chosen)": round(packed / READINGS, 2),
            **alternatives,
        },
        "read_one_day_raw_page_ms": {"raw": read_raw, "packed": read_packed},
    }
    return result


async def _sqlite_case(*, realistic: bool, auto_vacuum: str = "INCREMENTAL") -> dict[str, Any]:
    """The same day on SQLite (SQLITE_SERIES series), loaded as the writer stores a batch,
    compacted by `run_compaction`; bytes per reading from dbstat, the file before and after,
    and the day's raw page read before and after. `auto_vacuum` NONE: a file created before
    Fleetcore set INCREMENTAL (db.py), whose freed pages stay in it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lite.db"
        if auto_vacuum == "NONE":  # a file whose header was written before db.py's pragma
            with sqlite3.connect(path) as old:
                old.execute("PRAGMA auto_vacuum=NONE")
                old.execute("CREATE TABLE bench_marker (x INTEGER)")
        url = f"sqlite+aiosqlite:///{path}"
        database = Database.from_url(url, pool_size=2)
        now = now_ms()
        day = cutoff_for(now, 2) - DAY_MS
        try:
            await migrate.upgrade(database)
            org_id, devices = await make_devices(database, 1)
            async with database.session() as session:
                keys = [TelemetryKey(name=f"k{i}", kind=int(Kind.NUMBER)) for i in range(SERIES)]
                session.add_all(keys[:SQLITE_SERIES])
                await session.flush()
                series = [
                    Series(device_id=devices[0], key_id=k.id, organization_id=org_id)
                    for k in keys[:SQLITE_SERIES]
                ]
                session.add_all(series)
                await session.flush()
                ids = [s.id for s in series]
                await session.commit()
        finally:
            await database.close()
        rng = np.random.default_rng(21)
        blocks = []
        for sid in ids:
            stamps, values = _day(rng, realistic=realistic)
            blocks.append(
                list(zip([sid] * PER_DAY, (stamps + day).tolist(), values.tolist(), strict=True))
            )
        await asyncio.to_thread(load_sqlite, path, iter(blocks))
        readings = len(ids) * PER_DAY
        before = _lite_sizes(path, readings)
        read_raw = await _read_ms(url, ids[0], day)
        database = Database.from_url(url, pool_size=2)
        try:
            report = await run_compaction(database.engine, after_days=2, now_ms=now)
        finally:
            await database.close()
        assert report.readings == readings, report
        after = _lite_sizes(path, readings)
        read_packed = await _read_ms(url, ids[0], day)
        return {
            "auto_vacuum": auto_vacuum,
            "uncompacted_bytes_per_reading": before["ts_num"],
            "compacted_bytes_per_reading": round(after["ts_num_packed"] + after["ts_num"], 2),
            "file_mb": {"before": before["file_mb"], "after": after["file_mb"]},
            "free_pages_left_in_file": after["free_pages"],
            "pages_freed_by_compaction": report.pages_freed,
            "compaction_readings_per_s": round(report.rate),
            "read_one_day_raw_page_ms": {"raw": read_raw, "packed": read_packed},
        }


def _lite_sizes(path: Path, readings: int) -> dict[str, float]:
    """Bytes per reading of ts_num and ts_num_packed (with its key index), the file's
    size after a checkpoint, and its free pages."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def size(*names: str) -> float:
            marks = ", ".join("?" * len(names))
            query = f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({marks})"  # noqa: S608
            return round(connection.execute(query, names).fetchone()[0] / readings, 2)

        return {
            "ts_num": size("ts_num"),
            "ts_num_packed": size("ts_num_packed", "sqlite_autoindex_ts_num_packed_1"),
            "file_mb": round(path.stat().st_size / 1e6, 1),
            "free_pages": connection.execute("PRAGMA freelist_count").fetchone()[0],
        }
    finally:
        connection.close()


async def _sqlite_cases() -> dict[str, Any]:
    return {
        "realistic": await _sqlite_case(realistic=True),
        "random_doubles": await _sqlite_case(realistic=False),
        "realistic_auto_vacuum_none": await _sqlite_case(realistic=True, auto_vacuum="NONE"),
    }


def run() -> dict[str, Any]:
    """A day of readings, compacted, twice: realistic values and random doubles."""
    server = PostgresServer()
    server.start()
    try:
        realistic = asyncio.run(_one_case(server, realistic=True))
        worst = asyncio.run(_one_case(server, realistic=False))
    finally:
        server.stop()
    sqlite = asyncio.run(_sqlite_cases())
    return {
        "name": "telemetry_compaction",
        "readings": READINGS,
        "series": SERIES,
        "postgresql_realistic": realistic,
        "postgresql_random_doubles": worst,
        "sqlite": sqlite,
        "targets": {
            "compacted_le_12": realistic["compacted_bytes_per_reading"] <= TARGET_COMPACTED,
            "uncompacted_le_40": realistic["uncompacted_bytes_per_reading"] <= TARGET_RAW,
        },
        "note": "10-second numbers, one closed day per series; compacted = ts_num_packed "
        "(heap, TOAST, index) plus what is left of ts_num; SQLite: ts_num_packed "
        f"(zlib'd JSON, rowid table and key index), {SQLITE_SERIES} series; file sizes after "
        "a WAL checkpoint",
    }
