"""The bulk writer: a batch of readings into the value tables, roll-ups and latest values in
one transaction, de-duplicated on (series, ts). COPY on PostgreSQL, executemany on SQLite.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

from fleetcore.db import SQLITE_BEGIN_OPTION, create_sync_sqlite_engine
from fleetcore.telemetry.models import ROLLUPS, VALUE_TABLES, Series, TelemetryKey
from fleetcore_protocol.telemetry import Kind, Reading


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    """Readings of one device, as one submission to the pipeline."""

    device_id: uuid.UUID
    organization_id: uuid.UUID
    readings: Sequence[Reading]


@dataclass(frozen=True, slots=True)
class Stored:
    """A reading that was new and is now committed (what after-commit handlers see)."""

    device_id: uuid.UUID
    organization_id: uuid.UUID
    series_id: int
    key: str
    kind: Kind
    ts: int
    value: Any


@dataclass(slots=True)
class WriteResult:
    """What a batch did: the new readings, how many of each submission's readings they
    are (a reading sent twice in one batch counts for the first submission holding it),
    and how many were already stored."""

    stored: list[Stored] = field(default_factory=list)
    stored_per_item: list[int] = field(default_factory=list)
    duplicates: int = 0


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Dialect:
    """SQL that differs between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pg = name == "postgresql"
        self.least = "LEAST" if self.pg else "min"
        self.greatest = "GREATEST" if self.pg else "max"

    def params(self, count: int) -> str:
        if self.pg:
            return ", ".join(f"${i}" for i in range(1, count + 1))
        return ", ".join("?" * count)


_STAGE_TYPES = {
    Kind.NUMBER: ("REAL", "double precision"),
    Kind.TEXT: ("TEXT", "text"),
    Kind.BOOLEAN: ("INTEGER", "boolean"),
    Kind.JSON: ("TEXT", "jsonb"),
}


class TelemetryWriter:
    """Writes batches; keeps interned key and series ids in memory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = _Dialect(engine.dialect.name)
        self._sync_engine = None if self.dialect.pg else create_sync_sqlite_engine(engine.url)
        self._keys: dict[tuple[str, int], int] = {}
        self._series: dict[tuple[uuid.UUID, int], int] = {}

    async def write(self, batch: Sequence[DeviceReadings]) -> WriteResult:
        """Store a batch durably; returns only after the commit.

        The work is synchronous SQL on one connection, run in one go: in a thread on SQLite
        (a statement per event-loop wake-up costs milliseconds once the loop is busy with
        requests), through the greenlet bridge on PostgreSQL (asyncpg stays async).
        """
        if self._sync_engine is not None:
            return await asyncio.to_thread(self._write_sqlite, batch)
        async with self.engine.connect() as connection:
            return await connection.run_sync(self._run, batch)

    def _write_sqlite(self, batch: Sequence[DeviceReadings]) -> WriteResult:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as connection:
            return self._run(connection, batch)

    def _run(self, connection: Connection, batch: Sequence[DeviceReadings]) -> WriteResult:
        series = self._intern(connection, batch)
        connection = connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with connection.begin():
            return self._write(connection, batch, series)

    def _intern(
        self, connection: Connection, batch: Sequence[DeviceReadings]
    ) -> dict[tuple[uuid.UUID, str, Kind], int]:
        """Series id of every (device, key, kind) in the batch, creating missing ones."""
        wanted_keys = {(r.key, int(r.kind)) for item in batch for r in item.readings}
        missing_keys = wanted_keys - self._keys.keys()
        if missing_keys:
            self._insert_ignore(
                connection, TelemetryKey, [{"name": n, "kind": k} for n, k in missing_keys]
            )
            keys = connection.execute(
                select(TelemetryKey.id, TelemetryKey.name, TelemetryKey.kind).where(
                    tuple_(TelemetryKey.name, TelemetryKey.kind).in_(list(missing_keys))
                )
            )
            self._keys.update({(name, kind): key_id for key_id, name, kind in keys})
        org_of: dict[uuid.UUID, uuid.UUID] = {}
        wanted_series: set[tuple[uuid.UUID, int]] = set()
        for item in batch:
            org_of[item.device_id] = item.organization_id
            for r in item.readings:
                wanted_series.add((item.device_id, self._keys[(r.key, int(r.kind))]))
        missing_series = wanted_series - self._series.keys()
        if missing_series:
            self._insert_ignore(
                connection,
                Series,
                [
                    {"device_id": d, "key_id": k, "organization_id": org_of[d]}
                    for d, k in missing_series
                ],
            )
            for chunk in _chunks(list(missing_series), 500):
                rows = connection.execute(
                    select(Series.id, Series.device_id, Series.key_id).where(
                        tuple_(Series.device_id, Series.key_id).in_(chunk)
                    )
                )
                self._series.update({(d, k): sid for sid, d, k in rows})
        connection.commit()
        return {
            (item.device_id, r.key, r.kind): self._series[
                (item.device_id, self._keys[(r.key, int(r.kind))])
            ]
            for item in batch
            for r in item.readings
        }

    def _insert_ignore(
        self, connection: Connection, model: type[Any], rows: list[dict[str, Any]]
    ) -> None:
        insert = pg_insert if self.dialect.pg else sqlite_insert
        for chunk in _chunks(rows, 500):
            connection.execute(insert(model).values(chunk).on_conflict_do_nothing())

    def _write(
        self,
        connection: Connection,
        batch: Sequence[DeviceReadings],
        series: dict[tuple[uuid.UUID, str, Kind], int],
    ) -> WriteResult:
        staged: dict[Kind, dict[tuple[int, int], Stored]] = {kind: {} for kind in Kind}
        owner: dict[tuple[Kind, int, int], int] = {}  # the submission a staged row came from
        total = 0
        for index, item in enumerate(batch):
            for r in item.readings:
                total += 1
                sid = series[(item.device_id, r.key, r.kind)]
                rows = staged[r.kind]
                if (sid, r.ts) not in rows:
                    rows[(sid, r.ts)] = Stored(
                        item.device_id, item.organization_id, sid, r.key, r.kind, r.ts, r.value
                    )
                    owner[(r.kind, sid, r.ts)] = index
        result = WriteResult(stored_per_item=[0] * len(batch))
        for kind, rows in staged.items():
            if rows:
                for key in self._insert_rows(connection, kind, rows):
                    result.stored.append(rows[key])
                    result.stored_per_item[owner[(kind, *key)]] += 1
        result.duplicates = total - len(result.stored)
        numbers = [s for s in result.stored if s.kind is Kind.NUMBER]
        if numbers:
            for width, table in ROLLUPS.items():
                self._rollup(connection, table.name, width, numbers)
        if result.stored:
            self._latest(connection, result.stored)
        return result

    def _insert_rows(
        self, connection: Connection, kind: Kind, rows: dict[tuple[int, int], Stored]
    ) -> list[tuple[int, int]]:
        """Insert new rows of one kind; returns the (series, ts) that were not stored before."""
        table = VALUE_TABLES[kind].name
        stage = f"stage_{table}"
        sqlite_type, pg_type = _STAGE_TYPES[kind]
        records = [(s.series_id, s.ts, self._db_value(kind, s.value)) for s in rows.values()]
        if self.dialect.pg:
            connection.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"(series_id integer, ts bigint, value {pg_type}) ON COMMIT DELETE ROWS"
            )
            self._copy(connection, stage, records, ["series_id", "ts", "value"])
        else:
            if self._sqlite_all_new(connection, table, records):
                return list(rows)
            connection.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                f"(series_id INTEGER, ts INTEGER, value {sqlite_type})"
            )
            connection.exec_driver_sql(f"DELETE FROM {stage}")
            connection.exec_driver_sql(
                f"INSERT INTO {stage} (series_id, ts, value) VALUES (?, ?, ?)", records
            )
        returned = connection.exec_driver_sql(
            f"INSERT INTO {table} (series_id, ts, value) "
            f"SELECT series_id, ts, value FROM {stage} WHERE true "
            "ON CONFLICT DO NOTHING RETURNING series_id, ts"
        )
        rows_back: list[tuple[Any, ...]] = [tuple(row) for row in returned.fetchall()]
        return [(int(row[0]), int(row[1])) for row in rows_back]

    @staticmethod
    def _copy(
        connection: Connection, table: str, records: list[tuple[Any, ...]], columns: list[str]
    ) -> None:
        """asyncpg's COPY, awaited from the synchronous code run_sync bridges."""
        driver = connection.connection.driver_connection
        await_only(driver.copy_records_to_table(table, records=records, columns=columns))  # type: ignore[union-attr]

    @staticmethod
    def _sqlite_all_new(connection: Connection, table: str, records: list[tuple[Any, ...]]) -> bool:
        """Fast path: insert straight into the table; keep it only if no row was a duplicate.

        Duplicates are rare (redeliveries), so most batches skip the staging table; when
        some row already existed, the savepoint is rolled back and the caller stages.
        """
        raw = connection.connection.driver_connection  # the sqlite3 connection
        connection.exec_driver_sql("SAVEPOINT fast_insert")
        before = raw.total_changes  # type: ignore[union-attr]
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO {table} (series_id, ts, value) VALUES (?, ?, ?)", records
        )
        if raw.total_changes - before == len(records):  # type: ignore[union-attr]
            connection.exec_driver_sql("RELEASE fast_insert")
            return True
        connection.exec_driver_sql("ROLLBACK TO fast_insert")
        connection.exec_driver_sql("RELEASE fast_insert")
        return False

    def _db_value(self, kind: Kind, value: Any) -> Any:
        if kind is Kind.JSON:
            return _json(value)
        if kind is Kind.BOOLEAN and not self.dialect.pg:
            return int(value)
        return value

    def _rollup(
        self, connection: Connection, table: str, width: int, numbers: Iterable[Stored]
    ) -> None:
        """Merge this batch's new numbers into the roll-up buckets."""
        buckets: dict[tuple[int, int], list[Any]] = {}
        for s in numbers:
            key = (s.series_id, s.ts - s.ts % width)
            value = float(s.value)
            agg = buckets.get(key)
            if agg is None:
                buckets[key] = [1, value, value, value, s.ts, value, s.ts, value]
                continue
            agg[0] += 1
            agg[1] += value
            agg[2] = min(agg[2], value)
            agg[3] = max(agg[3], value)
            if s.ts < agg[4]:
                agg[4], agg[5] = s.ts, value
            if s.ts >= agg[6]:
                agg[6], agg[7] = s.ts, value
        d = self.dialect
        update = (
            f"cnt = {table}.cnt + excluded.cnt, "
            f"total = {table}.total + excluded.total, "
            f"vmin = {d.least}({table}.vmin, excluded.vmin), "
            f"vmax = {d.greatest}({table}.vmax, excluded.vmax), "
            f"vfirst = CASE WHEN excluded.first_ts < {table}.first_ts "
            f"THEN excluded.vfirst ELSE {table}.vfirst END, "
            f"first_ts = {d.least}({table}.first_ts, excluded.first_ts), "
            f"vlast = CASE WHEN excluded.last_ts >= {table}.last_ts "
            f"THEN excluded.vlast ELSE {table}.vlast END, "
            f"last_ts = {d.greatest}({table}.last_ts, excluded.last_ts)"
        )
        rows = [(sid, bucket, *agg) for (sid, bucket), agg in sorted(buckets.items())]
        self._upsert(connection, table, _ROLLUP_COLUMNS, rows, "(series_id, bucket)", update)

    def _latest(self, connection: Connection, stored: Iterable[Stored]) -> None:
        """Move each series' latest value forward (late data never moves it back)."""
        newest: dict[int, Stored] = {}
        for s in stored:
            current = newest.get(s.series_id)
            if current is None or s.ts >= current.ts:
                newest[s.series_id] = s
        rows = []
        for s in newest.values():
            columns: list[Any] = [None, None, None, None]
            columns[int(s.kind) - 1] = self._db_value(s.kind, s.value)
            rows.append((s.series_id, s.ts, *columns))
        rows.sort(key=lambda row: row[0])
        self._upsert(
            connection,
            "ts_latest",
            _LATEST_COLUMNS,
            rows,
            "(series_id)",
            "ts = excluded.ts, num = excluded.num, text = excluded.text, bool = excluded.bool, "
            "json = excluded.json WHERE excluded.ts >= ts_latest.ts",
        )

    def _upsert(
        self,
        connection: Connection,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: list[tuple[Any, ...]],
        conflict: str,
        update: str,
    ) -> None:
        """INSERT ... ON CONFLICT DO UPDATE of many rows: via COPY and one statement on
        PostgreSQL (executemany there costs a round of planning per row), executemany on SQLite."""
        names = ", ".join(name for name, _ in columns)
        if self.dialect.pg:
            stage = f"stage_{table}"
            types = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
            connection.exec_driver_sql(
                f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({types}) ON COMMIT DELETE ROWS"
            )
            self._copy(connection, stage, rows, [name for name, _ in columns])
            connection.exec_driver_sql(
                f"INSERT INTO {table} ({names}) SELECT {names} FROM {stage} "
                f"ON CONFLICT {conflict} DO UPDATE SET {update}"
            )
            return
        connection.exec_driver_sql(
            f"INSERT INTO {table} ({names}) VALUES ({self.dialect.params(len(columns))}) "
            f"ON CONFLICT {conflict} DO UPDATE SET {update}",
            rows,
        )


_ROLLUP_COLUMNS = (
    ("series_id", "integer"),
    ("bucket", "bigint"),
    ("cnt", "integer"),
    ("total", "double precision"),
    ("vmin", "double precision"),
    ("vmax", "double precision"),
    ("first_ts", "bigint"),
    ("vfirst", "double precision"),
    ("last_ts", "bigint"),
    ("vlast", "double precision"),
)
_LATEST_COLUMNS = (
    ("series_id", "integer"),
    ("ts", "bigint"),
    ("num", "double precision"),
    ("text", "text"),
    ("bool", "boolean"),
    ("json", "jsonb"),
)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
