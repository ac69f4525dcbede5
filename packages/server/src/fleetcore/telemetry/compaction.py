"""Compaction: closed hours of numeric series rewritten as packed rows.

A day older than `compact_after_days` is closed: each numeric series' readings of each of
its hours become one ts_num_packed row (ms offsets from the hour's start as int4[], values
as float8[]; TOAST's pglz compresses the pair to ~8 bytes a reading against ~84 raw, see
bench/telemetry_compaction.py), and the raw rows go in the same transaction, a statement
per chunk of series (DELETE ... RETURNING feeding the packing INSERT), so a reader sees
each reading exactly once whenever it looks. An hour already packed (late readings arrived
raw since) is merged: its packed readings and the new raw ones re-packed together, the
packed copy winning should both hold a (series, ts). Once a daily partition has no raw
rows left it is dropped: its space goes back at once and no dead rows wait for vacuum.

Why hour blocks, arrays and pglz (bench/telemetry_compaction.py, 10-second temperatures /
random doubles, bytes a reading): hour arrays with pglz 7.6 / 13.3; with lz4 8.5 / 13.3; day
blocks 6.3 / 12.5, but a narrow page or a late reading then costs a whole day's arrays; a
self-encoded bytea (numpy deltas + zlib) 3.0 / 8.8, but SQL cannot read it: every reader
would decode in Python. Arrays meet the target (12) and keep reads in SQL. Each row also
holds its reading count, so a page picks its blocks without opening their arrays.

SQLite packs the same hours its own way (zlib'd JSON read in SQL, ~5.8 B a reading against
~25 raw; sqlite_packing.py says why). Text, booleans and JSON stay raw on both: numbers are
the volume.

Concurrency: one compactor at a time (a session advisory lock; the job also runs once per
tick across processes), and each transaction takes the packing lock exclusively; late
writers take it shared. The whole rule is in packed.py.
"""

# ruff: noqa: S608  # SQL built from partition names we list ourselves; values as parameters

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetcore.advisory_locks import LockKey
from fleetcore.config import Settings
from fleetcore.db import Database
from fleetcore.jobs import JobScheduler
from fleetcore.telemetry import partitions, sqlite_packing
from fleetcore.telemetry.packed import BLOCK_MS, MIN_AGE_MS, PACK_LOCK_KEY
from fleetcore.telemetry.pg_sql import floor_sql
from fleetcore.telemetry.retention import single_runner

log = structlog.get_logger(__name__)

DAY_MS = partitions.DAY_MS
RUNNER_LOCK_KEY = LockKey.TELEMETRY_COMPACTION  # one compactor (the job and the CLI alike)
CHUNK_READINGS = 250_000  # readings moved per transaction, about (bounded lock and WAL bursts)
MAX_CHUNK_SERIES = 1_000

READINGS_PACKED = Counter(
    "fleetcore_telemetry_readings_packed_total",
    "Raw numeric readings moved into packed rows by compaction.",
)

# The distinct series of a table with readings older than $1: one index probe per series
# (a loose index scan) instead of reading every row.
_SERIES_SQL = (
    "WITH RECURSIVE s AS (SELECT min(series_id) AS id FROM {t} WHERE ts < $1 "
    "UNION ALL SELECT (SELECT min(series_id) FROM {t} WHERE series_id > s.id AND ts < $1) "
    "FROM s WHERE s.id IS NOT NULL) SELECT id FROM s WHERE id IS NOT NULL"
)

# One chunk: the series' raw readings older than $2 deleted and packed with what their
# hours already hold (packed copy first: first write wins); returns (readings, blocks).
_PACK_SQL = (
    "WITH gone AS (DELETE FROM {t} WHERE series_id = ANY($1::integer[]) AND ts < $2 "
    "RETURNING series_id, ts, value), "
    f"touched AS (SELECT DISTINCT series_id, {floor_sql('ts', BLOCK_MS)} AS block FROM gone), "
    "merged AS (SELECT DISTINCT ON (series_id, ts) series_id, ts, value FROM ("
    "SELECT p.series_id, p.block + u.o AS ts, u.v AS value, 0 AS late "
    "FROM ts_num_packed AS p JOIN touched AS t ON t.series_id = p.series_id "
    "AND t.block = p.block, unnest(p.offs, p.vals) AS u (o, v) "
    "UNION ALL SELECT series_id, ts, value, 1 FROM gone) AS m ORDER BY series_id, ts, late), "
    "packed AS (INSERT INTO ts_num_packed (series_id, block, n, offs, vals) "
    "SELECT series_id, block, count(*), array_agg((ts - block)::integer ORDER BY ts), "
    "array_agg(value ORDER BY ts) "
    f"FROM (SELECT series_id, {floor_sql('ts', BLOCK_MS)} AS block, ts, value FROM merged) b "
    "GROUP BY series_id, block ORDER BY series_id, block "
    "ON CONFLICT (series_id, block) DO UPDATE SET n = excluded.n, offs = excluded.offs, "
    "vals = excluded.vals "
    "RETURNING 1) "
    "SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM packed)"
)

_PLAN_SQL = (
    "SELECT count(*), count(DISTINCT series_id), "
    f"count(DISTINCT (series_id, {floor_sql('ts', BLOCK_MS)})) FROM {{t}} WHERE ts < $1"
)


@dataclass(slots=True)
class CompactionReport:
    """What a run packed (or, dry, would pack)."""

    cutoff_ms: int = 0
    dry_run: bool = False
    readings: int = 0  # raw readings packed
    blocks: int = 0  # packed rows written (new or re-packed)
    series: int = 0
    tables: list[str] = field(default_factory=list)  # the raw tables they came from
    partitions_dropped: list[str] = field(default_factory=list)
    pages_freed: int = 0  # SQLite: file pages handed back by incremental vacuum
    seconds: float = 0.0
    skipped: str | None = None  # why nothing ran

    @property
    def rate(self) -> float:
        """Readings packed per second."""
        return self.readings / self.seconds if self.seconds > 0 else 0.0


def cutoff_for(now_ms: int, after_days: int) -> int:
    """The day boundary before which readings are compacted: `after_days` (≥ 1) whole days
    back, so the youngest packed reading is more than packed.MIN_AGE_MS old."""
    if after_days < 1:
        raise ValueError("compaction needs after_days >= 1")
    cutoff = (now_ms - after_days * DAY_MS) // DAY_MS * DAY_MS
    assert cutoff <= now_ms - MIN_AGE_MS  # what the writer's late check relies on
    return cutoff


async def run_compaction(
    engine: AsyncEngine,
    *,
    after_days: int,
    now_ms: int | None = None,
    dry_run: bool = False,
    chunk_readings: int = CHUNK_READINGS,
) -> CompactionReport:
    """Pack every numeric reading older than the cut-off; `dry_run` only counts them."""
    now_ms = now_ms if now_ms is not None else _now_ms()
    cutoff = cutoff_for(now_ms, after_days)
    return await _compact(engine, cutoff, dry_run=dry_run, chunk_readings=chunk_readings)


async def compact_before(
    engine: AsyncEngine, before_ms: int, *, chunk_readings: int = CHUNK_READINGS
) -> CompactionReport:
    """Pack every numeric reading before the day boundary at or below `before_ms` (benches,
    operators), never one younger than a whole day: the writer's late rule (packed.py)."""
    cutoff = min(before_ms // DAY_MS * DAY_MS, cutoff_for(_now_ms(), 1))
    return await _compact(engine, cutoff, dry_run=False, chunk_readings=chunk_readings)


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


async def _compact(
    engine: AsyncEngine, cutoff: int, *, dry_run: bool, chunk_readings: int
) -> CompactionReport:
    report = CompactionReport(cutoff_ms=cutoff, dry_run=dry_run)
    begin = time.monotonic()
    if engine.dialect.name != "postgresql":
        if dry_run:
            await sqlite_packing.plan(engine, report)
        else:
            # Smaller transactions: a chunk holds SQLite's one write lock while Python packs it.
            chunk = min(chunk_readings, sqlite_packing.CHUNK_READINGS)
            await sqlite_packing.pack(engine, report, chunk)
        return _done(report, begin)
    async with single_runner(engine, RUNNER_LOCK_KEY) as mine:
        if not mine:
            report.skipped = "another compaction is running"
            return report
        async with engine.connect() as connection:
            targets = await _targets(connection, report.cutoff_ms)
        if targets is None:
            report.skipped = "TimescaleDB compresses its own chunks"
            return report
        for table, partition in targets:
            if dry_run:
                await _plan(engine, table, report)
                continue
            await _pack_table(engine, table, report, chunk_readings)
            if partition is not None and await _empty(engine, table):
                report.partitions_dropped += await partitions.drop(engine, [partition])
    return _done(report, begin)


def _done(report: CompactionReport, begin: float) -> CompactionReport:
    report.seconds = time.monotonic() - begin
    if report.readings and not report.dry_run:
        READINGS_PACKED.inc(report.readings)
        log.info(
            "telemetry_compacted",
            readings=report.readings,
            blocks=report.blocks,
            partitions_dropped=report.partitions_dropped,
            pages_freed=report.pages_freed,
            readings_per_s=round(report.rate),
        )
    return report


async def _targets(
    connection: AsyncConnection, cutoff: int
) -> list[tuple[str, partitions.Partition | None]] | None:
    """The raw tables to pack from: the closed daily partitions and the default (or ts_num
    itself, unpartitioned); None under TimescaleDB."""
    found = await connection.exec_driver_sql(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if found.first() is not None:
        return None
    names = await partitions.children(connection, "ts_num")
    if not names:
        return [("ts_num", None)]
    targets: list[tuple[str, partitions.Partition | None]] = []
    for name in names:
        daily = partitions.parse_partition(name)
        if daily is None:
            targets.append((name, None))  # the default: whatever it holds before the cut-off
        elif daily.end_ms <= cutoff:
            targets.append((name, daily))
    return targets


async def _plan(engine: AsyncEngine, table: str, report: CompactionReport) -> None:
    async with engine.connect() as connection:
        row: Any = (
            await connection.exec_driver_sql(_PLAN_SQL.format(t=table), (report.cutoff_ms,))
        ).one()
    if row[0]:
        report.readings += int(row[0])
        report.series += int(row[1])
        report.blocks += int(row[2])
        report.tables.append(table)


async def _pack_table(
    engine: AsyncEngine, table: str, report: CompactionReport, chunk_readings: int
) -> None:
    """Pack `table`'s readings before the cut-off, a chunk of series per transaction."""
    cutoff = report.cutoff_ms
    async with engine.connect() as connection:
        series = list(
            (await connection.exec_driver_sql(_SERIES_SQL.format(t=table), (cutoff,))).scalars()
        )
        if not series:
            return
        sample = await connection.exec_driver_sql(
            f"SELECT count(*) FROM {table} WHERE series_id = $1 AND ts < $2", (series[0], cutoff)
        )
        per_series = max(1, int(sample.scalar_one()))
        await connection.commit()
    size = max(1, min(MAX_CHUNK_SERIES, chunk_readings // per_series))
    report.tables.append(table)
    report.series += len(series)
    statement = _PACK_SQL.format(t=table)
    for first in range(0, len(series), size):
        async with engine.begin() as connection:
            # Late writers hold it shared while they check packed rows (packed.py).
            await connection.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (PACK_LOCK_KEY,))
            row: Any = (
                await connection.exec_driver_sql(statement, (series[first : first + size], cutoff))
            ).one()
        report.readings += int(row[0])
        report.blocks += int(row[1])


async def _empty(engine: AsyncEngine, table: str) -> bool:
    async with engine.connect() as connection:
        found = await connection.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1")
        return found.first() is None


def register_jobs(jobs: JobScheduler, database: Database, settings: Settings) -> None:
    """Compaction every `telemetry_compact_interval_s`, unless turned off."""
    after_days = settings.telemetry_compact_after_days
    if not after_days:
        return

    async def compaction() -> None:
        await run_compaction(database.engine, after_days=after_days)

    jobs.register("telemetry-compaction", settings.telemetry_compact_interval_s, compaction)
