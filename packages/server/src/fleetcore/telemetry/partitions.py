"""Daily range partitions of the value tables on PostgreSQL: created ahead, dropped when old.

Each value table (ts_num, ts_text, ts_bool, ts_json) has one partition per UTC day,
`<table>_pYYYYMMDD` FOR VALUES FROM (day start ms) TO (next day start ms), and the DEFAULT
partition `<table>_default` made by the migration for rows outside every day (old imports,
or days whose partition was not made in time).

A day whose rows already sit in the DEFAULT partition is not skipped: its partition is
created as a plain table, the day's rows are moved into it from the default, and it is
attached, all in one transaction that holds off writers of that table meanwhile (rare and
short: only rows of days not created in time). With TimescaleDB the tables are hypertables
whose chunks its own policies manage, so nothing here runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetcore.telemetry.models import VALUE_TABLES

log = structlog.get_logger(__name__)

DAY_MS = 86_400_000
# Waiting longer for a table lock would hold up every writer queued behind us.
LOCK_TIMEOUT = "5s"
_DAILY = re.compile(r"^(ts_(?:num|text|bool|json))_p(\d{8})$")

PARTITIONS_CREATED = Counter(
    "fleetcore_telemetry_partitions_created_total",
    "Daily partitions of the value tables created, by table.",
    ["table"],
)
PARTITIONS_DROPPED = Counter(
    "fleetcore_telemetry_partitions_dropped_total",
    "Daily partitions of the value tables dropped by retention, by table.",
    ["table"],
)
ROWS_MOVED = Counter(
    "fleetcore_telemetry_partition_rows_moved_total",
    "Rows moved out of a DEFAULT partition into a newly created daily partition, by table.",
    ["table"],
)


@dataclass(frozen=True, slots=True)
class Partition:
    """One daily partition: its table, name and range [start_ms, end_ms)."""

    table: str
    name: str
    day: date

    @property
    def start_ms(self) -> int:
        """First millisecond of the day (UTC)."""
        return day_start_ms(self.day)

    @property
    def end_ms(self) -> int:
        """First millisecond of the next day."""
        return self.start_ms + DAY_MS


def day_start_ms(day: date) -> int:
    """Epoch milliseconds at 00:00 UTC of `day`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def day_of(ms: int) -> date:
    """The UTC day holding epoch millisecond `ms`."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()


def partition_name(table: str, day: date) -> str:
    """`ts_num_p20260131` for ts_num on 2026-01-31."""
    return f"{table}_p{day:%Y%m%d}"


def parse_partition(name: str) -> Partition | None:
    """The daily partition a table name stands for, or None (the default, or not ours)."""
    match = _DAILY.match(name)
    if match is None:
        return None
    day = datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC).date()
    return Partition(match.group(1), name, day)


async def managed(connection: AsyncConnection) -> bool:
    """True on PostgreSQL without TimescaleDB, with the value tables range-partitioned."""
    if connection.dialect.name != "postgresql":
        return False
    timescale = await connection.exec_driver_sql(
        "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
    )
    if timescale.first() is not None:
        return False
    partitioned = await connection.exec_driver_sql(
        "SELECT count(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relname = ANY($1) AND c.relnamespace = current_schema()::regnamespace",
        ([t.name for t in VALUE_TABLES.values()],),
    )
    return int(partitioned.scalar_one()) == len(VALUE_TABLES)


async def children(connection: AsyncConnection, table: str) -> list[str]:
    """Names of the partitions attached to `table` (the default included)."""
    rows = await connection.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass ORDER BY c.relname",
        (table,),
    )
    return [str(name) for name in rows.scalars()]


def wanted_days(now_ms: int, days_ahead: int) -> list[date]:
    """Yesterday, today and the `days_ahead` days after today (UTC)."""
    today = day_of(now_ms)
    return [today + timedelta(days=offset) for offset in range(-1, days_ahead + 1)]


async def ensure_partitions(
    engine: AsyncEngine, *, days_ahead: int, now_ms: int | None = None
) -> list[str]:
    """Create the missing daily partitions for yesterday … today+days_ahead; returns them."""
    now_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    try:
        async with engine.connect() as connection:
            if not await managed(connection):
                return []
            existing = {
                n for t in VALUE_TABLES.values() for n in await children(connection, t.name)
            }
    except (DBAPIError, OSError) as exc:  # start anyway: /ready reports the database
        log.warning("partitions_not_checked", error=str(exc))
        return []
    created: list[str] = []
    for table in VALUE_TABLES.values():
        for day in wanted_days(now_ms, days_ahead):
            partition = Partition(table.name, partition_name(table.name, day), day)
            if partition.name in existing:
                continue
            try:
                if await _create(engine, partition):
                    created.append(partition.name)
            except DBAPIError as exc:  # rows land in the default meanwhile; the job retries
                log.warning("partition_create_failed", partition=partition.name, error=str(exc))
    if created:
        log.info("partitions_created", partitions=created)
    return created


async def _create(engine: AsyncEngine, partition: Partition) -> bool:
    """Create one partition; when the default holds rows of its day, move them into it."""
    table, name = partition.table, partition.name
    bounds = f"FOR VALUES FROM ({partition.start_ms}) TO ({partition.end_ms})"
    async with engine.begin() as connection:
        await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Another process (a second `serve`) may have made it since we looked.
        await connection.exec_driver_sql(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        if await _exists(connection, name):
            return False
        default = f"{table}_default"
        waiting = await connection.exec_driver_sql(
            f"SELECT 1 FROM {default} WHERE ts >= $1 AND ts < $2 LIMIT 1",  # noqa: S608
            (partition.start_ms, partition.end_ms),
        )
        if waiting.first() is None:
            await connection.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF {table} {bounds}")
        else:
            await connection.exec_driver_sql(
                f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            moved = await connection.exec_driver_sql(
                f"WITH moved AS (DELETE FROM {default} WHERE ts >= $1 AND ts < $2 "  # noqa: S608
                f"RETURNING series_id, ts, value) INSERT INTO {name} (series_id, ts, value) "
                "SELECT series_id, ts, value FROM moved",
                (partition.start_ms, partition.end_ms),
            )
            await connection.exec_driver_sql(
                f"ALTER TABLE {table} ATTACH PARTITION {name} {bounds}"
            )
            ROWS_MOVED.labels(table).inc(moved.rowcount)
            log.info("partition_rows_moved", partition=name, rows=moved.rowcount)
    PARTITIONS_CREATED.labels(table).inc()
    return True


async def _exists(connection: AsyncConnection, name: str) -> bool:
    found = await connection.exec_driver_sql("SELECT to_regclass($1)", (name,))
    return found.scalar_one() is not None


async def daily_partitions(engine: AsyncEngine) -> list[Partition]:
    """Every attached daily partition of the value tables (none when not managed here)."""
    async with engine.connect() as connection:
        if not await managed(connection):
            return []
        names = [n for t in VALUE_TABLES.values() for n in await children(connection, t.name)]
    return [p for p in map(parse_partition, names) if p is not None]


async def drop_partitions_before(engine: AsyncEngine, cutoff_ms: int) -> list[str]:
    """Drop every daily partition whose whole day is older than `cutoff_ms`; returns them."""
    old = [p for p in await daily_partitions(engine) if p.end_ms <= cutoff_ms]
    return await drop(engine, old)


async def drop(engine: AsyncEngine, partitions: Iterable[Partition]) -> list[str]:
    """Drop partitions one short transaction each; one that is locked is left for next time."""
    dropped: list[str] = []
    for partition in partitions:
        try:
            async with engine.begin() as connection:
                await connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                await connection.exec_driver_sql(f"DROP TABLE IF EXISTS {partition.name}")
        except DBAPIError as exc:
            log.warning("partition_drop_failed", partition=partition.name, error=str(exc))
            continue
        PARTITIONS_DROPPED.labels(partition.table).inc()
        dropped.append(partition.name)
    if dropped:
        log.info("partitions_dropped", partitions=dropped)
    return dropped
