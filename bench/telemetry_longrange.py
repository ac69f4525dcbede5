"""Long-range reads: a 30-day chart of 1-second data and a whole day of raw readings, on both
databases, through the functions the API and the dashboard call.

Data (generated in bulk, not through HTTP): one key `v` at 1 s for the 30 closed UTC days
before today (2,592,000 readings, one 1-reading spike), and ten keys `y0`..`y9` at 10 min
for 365 days (the 1-day interval comparison). PostgreSQL: a day at a time, the numbers
logged (`pg_sql.LOG_SQL`) and copied into ts_num in one transaction, then merged into the
roll-ups by the writer's own `pg_sql.apply_sql()`, exactly as TelemetryWriter's copy path
does; daily partitions made first, as the partitions job would have. SQLite: a day at a
time into a stage table (executemany), INSERT ... SELECT into ts_num and the writer's own
`pg_sql.rollup_sql` from the stage.

Figures, p50/p95 over RUNS reads (each in its own session, as a request has), in wall time
and in this process's CPU time (`cpu_*`: the read's own cost, steady when other work shares
the two cores; a SQLite read's quiet wall time is about its CPU time):
- chart_30d: `chart.read_chart` of `v` over the 30 days at WIDTH px (target p95 < 50 ms);
- raw_day_single: `queries.read_rows` of one whole day, 86,400 readings in one read;
- raw_day_walk: `queries.read_readings`, the API's page function, and the page's JSON, for
  the whole day (one page: the API's cap is 100,000): what a client reading a day through
  the API waits for, so the target (p95 < 150 ms) is held against it; the single read of
  the rows alone is its floor;
- aggregates_1d: the 1-day interval over 30/90/365 days for 1 and 10 keys, from the 1-hour
  roll-up as the API reads it, and from a probe table of 1-day buckets (what a 1-day roll-up
  would cost to read; there is none, see docs/architecture.md, Reads).
Then every step of AFTER (compaction, when the module exists) runs and the same reads are
timed again, so the figures compare before/after in one run.
"""

# ruff: noqa: S608  # SQL built from the writer's constant statements

from __future__ import annotations

import asyncio
import math
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import bindparam, text
from tests.support.postgres import PostgresServer

from bench.telemetry_ingest import asyncpg_dsn, make_devices, migrated
from fleetcore.auth.principal import Principal, PrincipalKind, Role
from fleetcore.db import Database
from fleetcore.server import tune_gc
from fleetcore.telemetry import chart, pg_sql, queries
from fleetcore.telemetry.models import ROLLUPS, Series, TelemetryKey
from fleetcore.telemetry.partitions import ensure_partitions
from fleetcore.telemetry.query_router import MAX_RAW_PAGE
from fleetcore_protocol.telemetry import Kind

SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
DAYS = 30
WIDTH = 1200
RUNS = 40
RAW_RUNS = 12
API_PAGE = MAX_RAW_PAGE  # the API's largest raw page: a whole day fits
YEAR_KEYS = 10
YEAR_STEP = 10 * MINUTE
TARGET_CHART_P95_MS = 50
TARGET_RAW_P95_MS = 150
Row = tuple[int, int, float]


def end_ms() -> int:
    """The start of today (UTC): every generated day is closed."""
    return int(time.time() * 1000) // DAY * DAY


def spike_ts(end: int) -> int:
    """The one reading of `v` far above the rest (a chart must still show it)."""
    return end - 13 * DAY + 12 * HOUR + 34 * MINUTE + 56 * SECOND


def wave(ts: int) -> float:
    """A daily cycle with a fractional part, as a temperature would be."""
    return round(20 + 5 * math.sin(2 * math.pi * (ts % DAY) / DAY) + (ts // SECOND % 7) / 10, 2)


def days_of_v(sid: int, end: int) -> Iterator[list[Row]]:
    """`v`, a day of 1-second rows at a time."""
    spike = spike_ts(end)
    for day in range(end - DAYS * DAY, end, DAY):
        yield [
            (sid, ts, 1000.0 if ts == spike else wave(ts)) for ts in range(day, day + DAY, SECOND)
        ]


def year_rows(sids: list[int], end: int) -> Iterator[list[Row]]:
    """`y0`..`y9`, a 30-day block of 10-minute rows at a time."""
    start = end - 365 * DAY
    for block in range(start, end, 30 * DAY):
        stop = min(block + 30 * DAY, end)
        yield [(s, ts, wave(ts) + s) for s in sids for ts in range(block, stop, YEAR_STEP)]


async def intern(database: Database, org_id: uuid.UUID, device_id: uuid.UUID) -> dict[str, int]:
    """The device's series `v`, `y0`..: key name -> series id."""
    names = ["v", *(f"y{i}" for i in range(YEAR_KEYS))]
    async with database.session() as session:
        keys = [TelemetryKey(name=n, kind=int(Kind.NUMBER)) for n in names]
        session.add_all(keys)
        await session.flush()
        series = [Series(device_id=device_id, key_id=k.id, organization_id=org_id) for k in keys]
        session.add_all(series)
        await session.flush()
        ids = {n: s.id for n, s in zip(names, series, strict=True)}
        await session.commit()
    return ids


async def load_pg(url: str, blocks: Iterator[list[Row]]) -> None:
    """Each block as the writer's copy path stores a batch: logged and copied in one
    transaction, then merged into the roll-ups and latest by the writer's apply statement."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for rows in blocks:
            rows.sort()
            ids, stamps, values = (list(c) for c in zip(*rows, strict=True))
            async with connection.transaction():
                await connection.execute(pg_sql.LOG_SQL, ids, stamps, values)
                await connection.copy_records_to_table(
                    "ts_num", records=rows, columns=("series_id", "ts", "value")
                )
            await connection.execute(pg_sql.apply_sql())
    finally:
        await connection.close()


def load_sqlite(path: Path, blocks: Iterator[list[Row]]) -> None:
    """Each block as the writer stores a batch on SQLite: a stage, INSERT ... SELECT into
    ts_num, and the writer's roll-up and latest statements from the stage."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TEMP TABLE stage (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, "
            "value REAL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
        )
        for rows in blocks:
            connection.execute("BEGIN")
            connection.execute("DELETE FROM stage")
            connection.executemany("INSERT INTO stage VALUES (?, ?, ?)", rows)
            connection.execute("INSERT INTO ts_num (series_id, ts, value) SELECT * FROM stage")
            for width, table in ROLLUPS.items():
                connection.execute(
                    pg_sql.rollup_sql(table.name, width, "stage", least="min", greatest="max")
                )
            connection.execute(
                "INSERT INTO ts_latest (series_id, ts, num) SELECT series_id, max(ts), value "
                "FROM stage WHERE true GROUP BY series_id "
                f"ON CONFLICT (series_id) DO UPDATE SET {pg_sql.LATEST_UPDATE}"
            )
            connection.execute("COMMIT")
    finally:
        connection.close()


def _p95(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def _quantiles(samples: list[float], cpu: list[float]) -> dict[str, float]:
    ordered, cpu = sorted(samples), sorted(cpu)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(_p95(ordered), 1),
        # The minimum: the read's cost with no other work on the machine's two cores.
        "min_ms": round(ordered[0], 1),
        # CPU time of this process (the event loop and the SQLite thread) per read: what
        # the read costs whatever else the two cores run. On a quiet machine the wall
        # time of a SQLite read is about this; PostgreSQL's own work is not in it.
        "cpu_p50_ms": round(statistics.median(cpu), 1),
        "cpu_p95_ms": round(_p95(cpu), 1),
    }


async def _timed(runs: int, read: Callable[[], Awaitable[Any]]) -> tuple[dict[str, float], Any]:
    await read()  # warm: plans cached, pages in memory, as on a serving system
    samples, cpu, result = [], [], None
    for _ in range(runs):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        result = await read()
        samples.append((time.perf_counter() - begin) * 1000)
        cpu.append((time.process_time() - begin_cpu) * 1000)
    return _quantiles(samples, cpu), result


class Reads:
    """The timed reads of one database."""

    def __init__(self, database: Database, org_id: uuid.UUID, device_id: uuid.UUID) -> None:
        self.database = database
        self.device_id = device_id
        self.principal = Principal(PrincipalKind.USER, uuid.uuid4(), org_id, Role.VIEWER)
        self.end = end_ms()

    async def chart_30d(self) -> dict[str, Any]:
        """The 30-day chart of `v` at WIDTH px, as the API and the dashboard read it."""

        async def read() -> Any:
            async with self.database.session() as session:
                return await chart.read_chart(
                    session,
                    self.principal,
                    device_id=self.device_id,
                    keys=("v",),
                    start=str(self.end - DAYS * DAY),
                    end=str(self.end),
                    width=WIDTH,
                )

        figures, answer = await _timed(RUNS, read)
        v = answer.series["v"]
        return {
            **figures,
            "meets_target": figures["p95_ms"] < TARGET_CHART_P95_MS,
            "width_px": WIDTH,
            "step_ms": answer.step_ms,
            "source": answer.source,
            "buckets": len(v.ts),
            "spike_kept": max(v.max) == 1000.0,
            "json_bytes": len(answer.model_dump_json()),
        }

    async def raw_day(self) -> dict[str, Any]:
        """Day 10 of `v`, 86,400 readings: in one read, and as the API's pages."""
        day = self.end - 20 * DAY

        async def single() -> int:
            async with self.database.session() as session:
                found = await queries.device_series(
                    session, self.device_id, self.principal.org_id, ("v",)
                )
                return len(await queries.read_rows(session, found, day, day + DAY, limit=DAY))

        async def walk() -> int:
            rows, cursor, pages = 0, None, 0
            while True:
                async with self.database.session() as session:
                    page = await queries.read_readings(
                        session,
                        self.principal,
                        device_id=self.device_id,
                        keys=("v",),
                        start=str(day),
                        end=str(day + DAY),
                        limit=API_PAGE,
                        cursor=cursor,
                        descending=False,
                    )
                page.json()  # what the API answers
                rows, pages, cursor = rows + len(page.rows), pages + 1, page.next_cursor
                if cursor is None:
                    return rows

        one, count = await _timed(RAW_RUNS, single)
        pages, walked = await _timed(RAW_RUNS, walk)
        return {
            "raw_day_single": {**one, "readings": count},
            "raw_day_walk": {
                **pages,
                "readings": walked,
                "page_size": API_PAGE,
                "meets_target": pages["p95_ms"] < TARGET_RAW_P95_MS,
            },
        }

    async def aggregates_1d(self, ids: dict[str, int]) -> dict[str, Any]:
        """The 1-day interval over 30/90/365 days from the 1-hour roll-up (what the API reads)
        and from a 1-day probe table (what a 1-day roll-up would cost to read)."""
        await self._probe_1d()
        out: dict[str, Any] = {}
        for days in (30, 90, 365):
            for keys in (1, YEAR_KEYS):
                series = [ids[f"y{i}"] for i in range(keys)]
                start = self.end - days * DAY
                hourly = queries.aggregate_query(series, start, self.end, DAY, "avg", source=HOUR)
                daily = text(
                    "SELECT series_id, bucket, total / cnt FROM ts_rollup_1d_probe "
                    "WHERE series_id IN :ids AND bucket >= :start AND bucket < :end"
                ).bindparams(bindparam("ids", expanding=True), start=start, end=self.end)
                for name, query in (("1h", hourly), ("1d_probe", daily)):
                    params = {"ids": series} if name == "1d_probe" else {}

                    async def read(query: Any = query, params: Any = params) -> int:
                        async with self.database.session() as session:
                            return len((await session.execute(query, params)).all())

                    figures, rows = await _timed(RUNS, read)
                    out[f"{days}d_{keys}keys_from_{name}"] = {**figures, "buckets": rows}
        return out

    async def _probe_1d(self) -> None:
        """ts_rollup_1d_probe: the 1-hour roll-up grouped by day, laid out as the roll-ups are
        (primary key (series_id, bucket); SQLite WITHOUT ROWID). Bench only."""
        sqlite = self.database.engine.dialect.name == "sqlite"
        async with self.database.engine.begin() as connection:
            await connection.exec_driver_sql("DROP TABLE IF EXISTS ts_rollup_1d_probe")
            await connection.exec_driver_sql(
                "CREATE TABLE ts_rollup_1d_probe (series_id integer NOT NULL, bucket bigint "
                "NOT NULL, cnt bigint NOT NULL, total double precision NOT NULL, "
                "PRIMARY KEY (series_id, bucket))" + (" WITHOUT ROWID" if sqlite else "")
            )
            await connection.exec_driver_sql(
                "INSERT INTO ts_rollup_1d_probe SELECT series_id, "
                f"bucket - bucket % {DAY}, sum(cnt), sum(total) FROM ts_rollup_1h GROUP BY 1, 2"
            )
            if not sqlite:
                await connection.exec_driver_sql("ANALYZE ts_rollup_1d_probe")

    async def all(self, ids: dict[str, int]) -> dict[str, Any]:
        """Every timed read."""
        return {
            "chart_30d": await self.chart_30d(),
            **await self.raw_day(),
            "aggregates_1d": await self.aggregates_1d(ids),
        }


async def compact(database: Database, before_ms: int) -> str | None:
    """Compact the closed days (branch compact); a note instead when it is not there yet."""
    try:
        from fleetcore.telemetry import compaction  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return "skipped: fleetcore.telemetry.compaction is not there yet"
    await compaction.compact_before(database.engine, before_ms)
    return None


# Steps run after the first measurements; the reads are then timed again. Each returns a
# note when it had nothing to do (the second round is then skipped).
AFTER: list[tuple[str, Callable[[Database, int], Awaitable[str | None]]]] = [
    ("compaction", compact)
]


async def _measure(url: str, sqlite_path: Path | None) -> dict[str, Any]:
    await migrated(url)
    end = end_ms()
    database = Database.from_url(url, pool_size=2)
    try:
        if sqlite_path is None:
            await ensure_partitions(database.engine, days_ahead=DAYS + 1, now_ms=end - DAYS * DAY)
        org_id, (device_id,) = await make_devices(database, 1)
        ids = await intern(database, org_id, device_id)
        begin = time.perf_counter()
        blocks = [days_of_v(ids["v"], end), year_rows([ids[f"y{i}"] for i in range(10)], end)]
        for block in blocks:
            if sqlite_path is None:
                await load_pg(url, block)
            else:
                await asyncio.to_thread(load_sqlite, sqlite_path, block)
        loaded = time.perf_counter() - begin
        if sqlite_path is None:  # as autovacuum would have by then: visibility map, stats
            connection = await asyncpg.connect(asyncpg_dsn(url))
            try:
                await connection.execute("VACUUM ANALYZE")
            finally:
                await connection.close()
        reads = Reads(database, org_id, device_id)
        result: dict[str, Any] = {"load_seconds": round(loaded, 1), "before": await reads.all(ids)}
        for name, step in AFTER:
            note = await step(database, end)
            result[f"after_{name}"] = {"note": note} if note else await reads.all(ids)
        return result
    finally:
        await database.close()


def run() -> dict[str, Any]:
    """Generate the data on each database and time the reads."""
    # The collector as the server runs it (fleetcore serve calls this at start): a day of
    # readings is 250,000 short-lived objects, and at Python's default thresholds the
    # collections they trigger cost more than the read itself (~260 ms against ~75 ms).
    tune_gc()
    server = PostgresServer()
    url = server.start()
    try:
        postgresql = asyncio.run(_measure(url, None))
    finally:
        server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "longrange.db"
        sqlite = asyncio.run(_measure(f"sqlite+aiosqlite:///{path}", path))
    return {
        "name": "telemetry_longrange",
        "readings": DAYS * DAY // SECOND,
        "targets": {"chart_30d_p95_ms": TARGET_CHART_P95_MS, "raw_day_p95_ms": TARGET_RAW_P95_MS},
        "postgresql": postgresql,
        "sqlite": sqlite,
        "note": "raw_day_walk is the day through the API's page function with its JSON, the "
        "target's meaning; raw_day_single, one read of 86,400 rows, is its floor. Timings on "
        "a shared 2-core machine: compare within one run",
    }
