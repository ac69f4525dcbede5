"""Telemetry ingest: database ceilings, Fleetcore's writer and HTTP ingest, in one run.

The ceilings and Fleetcore share one throwaway PostgreSQL server and the same machine, so
the ratios hold on a noisy box: the de-dup ceiling and the PostgreSQL writer are measured
back to back in ROUNDS rounds (a fresh database each) and the writer's ratio is the median
of the rounds' ratios, so a burst of load from elsewhere skews one round, not the figure.
Loopback only, bounded in time (about two and a half minutes).

Measured on the 2-core development box, busy with other work (five runs each, alternated,
median and range): writer / de-dup ceiling 0.87 (0.77-1.07), PostgreSQL writer 283 k
readings/s (229-394 k); before numbers were copied straight into ts_num, 0.69 (0.63-0.69)
and 223 k/s (154-250 k).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
from tests.support.postgres import PostgresServer

from bench import telemetry_http
from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database, create_engine
from fleetcore.devices.models import DeviceProfile
from fleetcore.devices.service import new_device
from fleetcore.telemetry.partitions import ensure_partitions
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading

ROWS = 500_000
BATCH = 5_000
ROUNDS = 3  # de-dup ceiling and PostgreSQL writer, back to back
SERIES = 1_000  # ceilings: rows are (series 1..SERIES, ts, value), time-major like live data
DEVICES = 1_000  # the writer: DEVICES x KEYS series, one timestamp per batch
KEYS = 5
Row = tuple[int, int, float]


def now_ms() -> int:
    """Epoch milliseconds now."""
    return int(time.time() * 1000)


def value(i: int) -> float:
    """A plausible sensor value with a fractional part (SQLite stores whole floats smaller)."""
    return 20.0 + (i * 7919 % 10_000) / 997


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`items` cut into lists of `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def ceiling_rows(base: int, count: int = ROWS) -> list[Row]:
    """`count` rows, one per series per second from `base`."""
    return [
        (s, base + t * 1000, value(t * SERIES + s))
        for t in range(count // SERIES)
        for s in range(1, SERIES + 1)
    ]


def rate(count: int, begin: float) -> int:
    """Items per second since `begin` (perf_counter)."""
    return round(count / (time.perf_counter() - begin))


def asyncpg_dsn(url: str) -> str:
    """The plain libpq URL asyncpg takes."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def migrated(url: str) -> None:
    """Schema at head; on PostgreSQL, the daily partitions of yesterday .. tomorrow."""
    database = Database.from_url(url)
    try:
        await migrate.upgrade(database)
        await ensure_partitions(database.engine, days_ahead=1)
    finally:
        await database.close()


async def pg_copy(dsn: str, rows: list[Row]) -> int:
    """Ceiling: COPY batches straight into ts_num (partitioned), one connection."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE ts_num")
        begin = time.perf_counter()
        for batch in chunks(rows, BATCH):
            await connection.copy_records_to_table(
                "ts_num", records=batch, columns=["series_id", "ts", "value"]
            )
        return rate(len(rows), begin)
    finally:
        await connection.close()


async def pg_dedup(dsn: str, rows: list[Row]) -> tuple[int, int]:
    """Ceiling of the de-dup path: COPY into a staging table, INSERT ... ON CONFLICT DO
    NOTHING, a transaction per batch; new rows, then the same rows again (all duplicates)."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE ts_num")
        await connection.execute(
            "CREATE TEMP TABLE stage (series_id integer, ts bigint, value double precision) "
            "ON COMMIT DELETE ROWS"
        )
        rates = []
        for _ in range(2):
            begin = time.perf_counter()
            for batch in chunks(rows, BATCH):
                async with connection.transaction():
                    await connection.copy_records_to_table(
                        "stage", records=batch, columns=["series_id", "ts", "value"]
                    )
                    await connection.execute(
                        "INSERT INTO ts_num SELECT series_id, ts, value FROM stage "
                        "ON CONFLICT DO NOTHING"
                    )
            rates.append(rate(len(rows), begin))
        return rates[0], rates[1]
    finally:
        await connection.close()


def sqlite_executemany(path: Path, rows: list[Row]) -> int:
    """Ceiling: sqlite3 executemany into ts_num (WITHOUT ROWID, WAL, synchronous=NORMAL),
    one transaction per batch like the writer."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("DELETE FROM ts_num")
        begin = time.perf_counter()
        for batch in chunks(rows, BATCH):
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO ts_num (series_id, ts, value) VALUES (?,?,?)", batch
            )
            connection.execute("COMMIT")
        return rate(len(rows), begin)
    finally:
        connection.close()


async def make_devices(
    database: Database, count: int, *, mqtt_limits: tuple[float, int] | None = None
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """An organization with `count` devices, through the ORM; with `mqtt_limits` (messages
    per second, burst), of a profile allowing that much MQTT traffic per device."""
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    async with database.session() as session:
        org = await users.create_organization(
            session, None, data=OrganizationIn(name=slug, slug=slug)
        )
        profile_id = None
        if mqtt_limits is not None:
            rate, burst = mqtt_limits
            profile = DeviceProfile(
                organization_id=org.id, name="bench", mqtt_rate_per_s=rate, mqtt_burst=burst
            )
            session.add(profile)
            await session.flush()
            profile_id = profile.id
        devices = [
            new_device(org.id, name=f"d{i}", serial_number=f"S{i}", profile_id=profile_id)[0]
            for i in range(count)
        ]
        session.add_all(devices)
        await session.commit()
        return org.id, [d.id for d in devices]


def writer_batch(org_id: uuid.UUID, devices: list[uuid.UUID], ts: int) -> list[DeviceReadings]:
    """One batch: KEYS readings of every device at `ts`."""
    return [
        DeviceReadings(
            device,
            org_id,
            [
                Reading(f"k{k}", ts, Kind.NUMBER, value(ts // 1000 + d * KEYS + k))
                for k in range(KEYS)
            ],
        )
        for d, device in enumerate(devices)
    ]


async def writer_rate(url: str, readings: int, *, base: int, busy: bool = True) -> int:
    """Fleetcore's TelemetryWriter: readings/s over `readings` in batches of BATCH, until
    the last is committed with its roll-ups and latest values. `busy`: as the pipeline
    writes while more batches wait (roll-ups merged for several batches at once);
    otherwise merged batch by batch, as when each batch is the last one queued."""
    database = Database(create_engine(url, pool_size=4))
    try:
        org_id, devices = await make_devices(database, DEVICES)
        writer = TelemetryWriter(database.engine)
        per_batch = DEVICES * KEYS
        await writer.write(writer_batch(org_id, devices, base - 1000))  # interns the series
        batches = [
            writer_batch(org_id, devices, base + b * 1000) for b in range(readings // per_batch)
        ]
        begin = time.perf_counter()
        for n, batch in enumerate(batches, 1):
            result = await writer.write(batch, defer_rollups=busy and n < len(batches))
            assert len(result.stored) == per_batch, result.duplicates
        return rate(readings, begin)
    finally:
        await database.close()


async def _ceilings_and_writer(server: PostgresServer, data_dir: Path) -> dict[str, Any]:
    pg_ceiling, pg_idle = server.create_database("ceiling"), server.create_database("writer_idle")
    pg_writers = [server.create_database(f"writer{n}") for n in range(ROUNDS)]
    sqlite_url = f"sqlite+aiosqlite:///{data_dir / 'writer.db'}"
    for url in (pg_ceiling, *pg_writers, pg_idle, sqlite_url):
        await migrated(url)
    rows = ceiling_rows(now_ms() - 3_600_000)
    copy = await pg_copy(asyncpg_dsn(pg_ceiling), rows)
    base = now_ms() - 7_200_000
    rounds = []  # (de-dup ceiling, its all-duplicates rate, writer)
    for pg_writer in pg_writers:
        dedup_round = await pg_dedup(asyncpg_dsn(pg_ceiling), rows)
        rounds.append((*dedup_round, await writer_rate(pg_writer, ROWS, base=base)))
    dedup = round(statistics.median(r[0] for r in rounds))
    dedup_dupes = round(statistics.median(r[1] for r in rounds))
    round_ratios = [round(w / d, 3) for d, _, w in rounds]
    lite = sqlite_executemany(data_dir / "writer.db", rows)
    writer = {
        "postgresql": round(statistics.median(r[2] for r in rounds)),
        "postgresql_merged_per_batch": await writer_rate(pg_idle, ROWS, base=base, busy=False),
        "sqlite": await writer_rate(sqlite_url, ROWS, base=base),
    }
    return {
        "ceilings_rows_per_s": {
            "pg_copy": copy,
            "pg_dedup_copy_stage_insert": dedup,
            "pg_dedup_all_duplicates": dedup_dupes,
            "sqlite_executemany": lite,
        },
        "writer_readings_per_s": writer,
        "writer_ratio": {
            # the median of the rounds' ratios (each: writer / the ceiling just before it)
            "postgresql_vs_pg_dedup": statistics.median(round_ratios),
            "postgresql_vs_pg_dedup_rounds": round_ratios,
            "postgresql_merged_per_batch_vs_pg_dedup": round(
                writer["postgresql_merged_per_batch"] / dedup, 3
            ),
            "sqlite_vs_sqlite_executemany": round(writer["sqlite"] / lite, 3),
        },
    }


def run() -> dict[str, Any]:
    """Ceilings, the writer, then HTTP ingest on both databases."""
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = asyncio.run(_ceilings_and_writer(server, Path(tmp)))
            http = telemetry_http.measure(server, Path(tmp))
    finally:
        server.stop()
    dedup = result["ceilings_rows_per_s"]["pg_dedup_copy_stage_insert"]
    side_by_side = http_side_by_side(http, dedup)
    return {
        "name": "telemetry_ingest",
        "rows": ROWS,
        "batch": BATCH,
        **result,
        "http": http,
        "http_side_by_side": side_by_side,
        "http_batch_100_pg_vs_pg_dedup_ceiling": side_by_side["postgresql"]["batch_100_vs_ceiling"],
        "targets": http_targets(side_by_side),
        "note": telemetry_http.NOTE,
    }


SINGLE_VS_BARE = 0.40  # single readings: at least this share of bare FastAPI's requests/s
SINGLE_P99_MS = 50.0  # at 100 clients
BATCH_VS_DEDUP = 0.50  # batches of 100: at least this share of the de-dup ceiling's rows/s


def http_side_by_side(http: dict[str, Any], dedup: int) -> dict[str, Any]:
    """Per database: bare FastAPI, single readings and batches of 100, with their ratios."""
    table: dict[str, Any] = {}
    for db in ("sqlite", "postgresql"):
        figures = http[db]
        single, batch = figures["single"], figures["batch_100"]
        bare = figures["bare_fastapi_single"]
        table[db] = {
            "bare_fastapi_requests_per_s": bare["requests_per_s"],
            "bare_fastapi_p50_ms": bare["p50_ms"],
            "bare_fastapi_p99_ms": bare["p99_ms"],
            "single_requests_per_s": single["requests_per_s"],
            "single_vs_bare_fastapi": figures["single_vs_bare_fastapi"],
            "single_p50_ms": single["p50_ms"],
            "single_p99_ms": single["p99_ms"],
            "batch_100_readings_per_s": batch["readings_per_s"],
            "batch_100_p99_ms": batch["p99_ms"],
            "pg_dedup_ceiling_rows_per_s": dedup,
            "batch_100_vs_ceiling": round(batch["readings_per_s"] / dedup, 3),
        }
    return table


def http_targets(table: dict[str, Any]) -> dict[str, Any]:
    """The issue's HTTP targets, per database (the batch target is PostgreSQL's)."""
    targets: dict[str, Any] = {}
    for db in ("sqlite", "postgresql"):
        row = table[db]
        targets[f"{db}_single_at_least_40pct_of_bare_fastapi"] = (
            row["single_vs_bare_fastapi"] >= SINGLE_VS_BARE
        )
        targets[f"{db}_single_p99_under_50_ms"] = row["single_p99_ms"] < SINGLE_P99_MS
    targets["postgresql_batch_100_at_least_half_of_dedup_ceiling"] = (
        table["postgresql"]["batch_100_vs_ceiling"] >= BATCH_VS_DEDUP
    )
    return targets
