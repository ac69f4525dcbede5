"""The bulk writer: a batch of readings into the value tables, roll-ups and latest values,
durably before it returns, de-duplicated on (series, ts).

Python touches each reading once, to look up its series and make a (series, ts, value)
row; de-duplication, roll-ups and latest values are computed by the database from the new
rows. Duplicates are rare (redeliveries), so a batch is first written as if it had none and,
if one turns up, rolled back and written again `careful`ly; after a batch with duplicates
the next one starts careful (redeliveries come in runs).

PostgreSQL: numbers are copied (binary COPY, sorted by key) straight into ts_num and logged
for the roll-ups from the same arrays; a unique violation means a duplicate. Careful, and
for the other kinds always, the rows are copied into a session stage, then one INSERT ...
SELECT ... ON CONFLICT DO NOTHING, which returns only a count unless some reading was a
duplicate (new numbers logged in the same statement). Logged numbers are merged into
roll-ups and latest values by one more statement, for many batches at once and beside the
next inserts while the pipeline is busy (see pg_sql.py); a new writer merges whatever an
earlier one (a crashed process) left logged with its first write. SQLite: the rows go into
a temporary table in multi-row INSERTs (a few statements, not one per row), then INSERT ...
SELECT into the value table and the upserts from it, in the batch's transaction.

A batch holding a number older than a day less an hour may meet packed readings (closed
hours compacted into ts_num_packed): it goes the careful way, which drops the ones already
packed, under the packing lock on PostgreSQL (packed.py states the rule).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import asyncpg  # type: ignore[import-untyped]  # no stubs
import orjson
import structlog
from sqlalchemy import Connection, Engine, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.util import await_only

from fleetcore.db import SQLITE_BEGIN_OPTION, create_sync_sqlite_engine
from fleetcore.telemetry import packed, pg_sql, sqlite_packing
from fleetcore.telemetry.models import ROLLUPS, VALUE_TABLES, Series, TelemetryKey
from fleetcore_protocol.telemetry import Kind, Reading

log = structlog.get_logger(__name__)

Row = tuple[int, int, Any]  # (series_id, ts, value)


@dataclass(frozen=True, slots=True)
class DeviceReadings:
    """Readings of one device, as one submission to the pipeline."""

    device_id: uuid.UUID
    organization_id: uuid.UUID
    readings: Sequence[Reading]
    transport: str = ""  # how they came (http, mqtt, import, ...): usage metering's label


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

    stored: Sequence[Stored] = field(default_factory=list)
    stored_per_item: list[int] = field(default_factory=list)
    duplicates: int = 0


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


# Per kind, None when every row was new, else the (series_id, ts) that were stored.
Inserted = list[set[tuple[int, int]] | None]


def _stored(
    batch: Sequence[DeviceReadings],
    rows: list[list[Row]],
    inserted: Inserted,
    per_item: list[int] | None = None,
) -> list[Stored]:
    """The Stored readings, kind by kind in submission order. A reading is stored when its
    (series, ts) was inserted and no earlier reading of the batch claimed it."""
    out: list[Stored] = []
    for kind in Kind:
        kind_rows = rows[kind]
        if not kind_rows:
            continue
        new = inserted[kind]
        claimed: set[tuple[int, int]] = set()
        series_ids = iter(kind_rows)
        for index, item in enumerate(batch):
            device_id, organization_id = item.device_id, item.organization_id
            for r in item.readings:
                if r.kind != kind:
                    continue
                sid = next(series_ids)[0]
                if new is not None:
                    key = (sid, r.ts)
                    if key not in new or key in claimed:
                        continue
                    claimed.add(key)
                out.append(Stored(device_id, organization_id, sid, r.key, kind, r.ts, r.value))
                if per_item is not None:
                    per_item[index] += 1
    return out


class _AllStored(Sequence[Stored]):
    """Every reading of a batch, stored; the Stored objects are made when first read (the
    batch's readings and series ids are kept meanwhile), so a batch nobody looks into costs
    no object per reading."""

    __slots__ = ("_batch", "_items", "_len", "_rows")

    def __init__(self, batch: Sequence[DeviceReadings], rows: list[list[Row]]) -> None:
        self._batch = batch
        self._rows = rows
        self._len = sum(len(r) for r in rows)
        self._items: list[Stored] | None = None

    def _all(self) -> list[Stored]:
        if self._items is None:
            self._items = _stored(self._batch, self._rows, [None] * len(self._rows))
        return self._items

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, index: int) -> Stored: ...

    @overload
    def __getitem__(self, index: slice) -> list[Stored]: ...

    def __getitem__(self, index: int | slice) -> Stored | list[Stored]:
        return self._all()[index]

    def __iter__(self) -> Iterator[Stored]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _AllStored):
            other = other._all()
        return self._all() == other

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __repr__(self) -> str:
        return repr(self._all())


Sample = Reading | Stored  # what a reader of stored readings needs: key, ts, value
DeviceRun = tuple[uuid.UUID, uuid.UUID, Sequence[Sample]]  # device, organization, readings


def device_runs(stored: Sequence[Stored]) -> list[DeviceRun]:
    """The stored readings as runs of one device's readings (device, organization, readings),
    in batch order. When every reading of the batch was new, these are the submissions'
    own readings: no Stored object is made for a reader that needs no series id."""
    if isinstance(stored, _AllStored) and stored._items is None:
        return [(item.device_id, item.organization_id, item.readings) for item in stored._batch]
    runs: list[DeviceRun] = []
    device: uuid.UUID | None = None
    run: list[Sample] = []
    for reading in stored:
        if reading.device_id is not device:  # equal ids in two runs are fine for readers
            device = reading.device_id
            run = []
            runs.append((device, reading.organization_id, run))
        run.append(reading)
    return runs


class _Duplicates(Exception):
    """Some reading of the batch was a duplicate (found by the first, optimistic attempt)."""


class _Dialect:
    """SQL that differs between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pg = name == "postgresql"


_SQLITE_CHUNK = 5_000  # rows per multi-row INSERT (3 parameters each; SQLite allows 32,766)
# While the pipeline is busy, logged numbers wait for a merge into roll-ups and latest values
# at most this many readings or seconds (what a reader of roll-ups may lag behind then).
DEFER_READINGS = 250_000
DEFER_SECONDS = 1.0


class TelemetryWriter:
    """Writes batches; keeps interned key and series ids in memory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = _Dialect(engine.dialect.name)
        # SQLite: one connection kept between batches (no connect and pragmas per batch);
        # batches are written one at a time, so it is never used by two threads at once.
        # Made at the first write: a process (or an app under test) that writes none does
        # not pay for an engine (about 5 ms).
        self._sync_engine: Engine | None = None
        self._keys: dict[tuple[str, int], int] = {}
        self._series: dict[tuple[uuid.UUID, int], int] = {}
        # device -> (key, kind) -> series id: the one lookup per reading on the hot path
        self._device_series: dict[uuid.UUID, dict[tuple[str, int], int]] = {}
        self._sql: dict[tuple[str, ...], str] = {}
        # Numbers logged and not merged by a merge of this writer's yet (when the first of
        # them was logged, monotonic). At first, unknown: a writer that died may have left
        # some, so the first write merges at once (inline, or in the background if deferred).
        self._unmerged = 1 if self.dialect.pg else 0
        self._oldest_unmerged = -math.inf
        self._wary = False  # the last batch had duplicates: start the next one careful
        self._merging: asyncio.Task[None] | None = None
        self._held: AsyncConnection | None = None

    async def write(
        self, batch: Sequence[DeviceReadings], *, defer_rollups: bool = False
    ) -> WriteResult:
        """Store a batch durably; returns only after the commit.

        `defer_rollups` (PostgreSQL; the pipeline sets it while more batches are queued):
        the batch's numbers are merged into roll-ups and latest values later, with other
        batches', by a merge in the background once DEFER_READINGS or DEFER_SECONDS are
        reached. Without it, every number logged so far is merged before the commit, so a
        reader sees them as soon as the write returns.

        The work is synchronous SQL on one connection, run in one go: in a thread on SQLite
        (a statement per event-loop wake-up costs milliseconds once the loop is busy with
        requests), through the greenlet bridge on PostgreSQL (asyncpg stays async).
        """
        if not self.dialect.pg:
            if self._sync_engine is None:
                self._sync_engine = create_sync_sqlite_engine(self.engine.url, keep_one=True)
            return await asyncio.to_thread(self._write_sqlite, batch)
        if not defer_rollups and self._merging is not None:
            await asyncio.shield(self._merging)  # what it claimed is part of "all merged"
        # While busy, the connection is kept for the next batch: no pool check-out and ping
        # per batch. The write that empties the queue gives it back.
        connection, self._held = self._held or await self.engine.connect(), None
        try:
            result = await connection.run_sync(self._run, batch, defer_rollups)
        except BaseException:
            await connection.close()
            raise
        if defer_rollups:
            self._held = connection
        else:
            await connection.close()
        if defer_rollups and self._merging is None and self._merge_due():
            self._unmerged = 0
            self._merging = asyncio.create_task(self._merge_in_background())
        return result

    async def settle(self) -> None:
        """Merge every number logged so far and give back the kept connection (the
        pipeline's last act; a later write would merge them too)."""
        if self._sync_engine is not None:
            self._sync_engine.dispose()  # closes the kept connection; a later write reopens
        if self._merging is not None:
            await asyncio.shield(self._merging)
        if self._held is not None:
            await self._held.close()
            self._held = None
        if self._unmerged:
            async with self.engine.begin() as connection:
                await connection.exec_driver_sql(self._apply_sql())
            self._unmerged = 0

    def _write_sqlite(self, batch: Sequence[DeviceReadings]) -> WriteResult:
        assert self._sync_engine is not None
        with self._sync_engine.connect() as connection:
            return self._run(connection, batch)

    def _run(
        self, connection: Connection, batch: Sequence[DeviceReadings], defer: bool = False
    ) -> WriteResult:
        rows = self._rows(batch)
        if rows is None:  # some series is not interned yet
            self._intern(connection, batch)
            rows = self._rows(batch)
            assert rows is not None
        connection = connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        try:
            with connection.begin():
                result = self._write(connection, batch, rows, careful=self._wary, defer=defer)
        except _Duplicates:  # rolled back; again, finding out which readings were stored
            with connection.begin():
                result = self._write(connection, batch, rows, careful=True, defer=defer)
        self._wary = result.duplicates > 0
        return result

    def _rows(self, batch: Sequence[DeviceReadings]) -> list[list[Row]] | None:
        """(series_id, ts, value) rows per kind (indexed by kind), in submission order;
        None when a series is not known yet."""
        rows: list[list[Row]] = [[] for _ in range(len(Kind) + 1)]
        known = self._device_series
        for item in batch:
            series = known.get(item.device_id)
            if series is None:
                return None
            for r in item.readings:
                kind = r.kind
                sid = series.get((r.key, kind))
                if sid is None:
                    return None
                rows[kind].append((sid, r.ts, r.value))
        return rows

    def _intern(self, connection: Connection, batch: Sequence[DeviceReadings]) -> None:
        """Series id of every (device, key, kind) in the batch, creating missing ones."""
        wanted_keys = {(r.key, int(r.kind)) for item in batch for r in item.readings}
        # Sorted, as every insert here: concurrent writers then wait for each other's new
        # rows in one order and cannot deadlock.
        missing_keys = sorted(wanted_keys - self._keys.keys())
        if missing_keys:
            self._insert_ignore(
                connection, TelemetryKey, [{"name": n, "kind": k} for n, k in missing_keys]
            )
            keys = connection.execute(
                select(TelemetryKey.id, TelemetryKey.name, TelemetryKey.kind).where(
                    tuple_(TelemetryKey.name, TelemetryKey.kind).in_(missing_keys)
                )
            )
            self._keys.update({(name, kind): key_id for key_id, name, kind in keys})
        org_of: dict[uuid.UUID, uuid.UUID] = {}
        wanted_series: set[tuple[uuid.UUID, int]] = set()
        for item in batch:
            org_of[item.device_id] = item.organization_id
            for r in item.readings:
                wanted_series.add((item.device_id, self._keys[(r.key, int(r.kind))]))
        missing_series = sorted(wanted_series - self._series.keys())
        if missing_series:
            self._insert_ignore(
                connection,
                Series,
                [
                    {"device_id": d, "key_id": k, "organization_id": org_of[d]}
                    for d, k in missing_series
                ],
            )
            for chunk in _chunks(missing_series, 500):
                rows = connection.execute(
                    select(Series.id, Series.device_id, Series.key_id).where(
                        tuple_(Series.device_id, Series.key_id).in_(chunk)
                    )
                )
                self._series.update({(d, k): sid for sid, d, k in rows})
        connection.commit()
        for item in batch:
            known = self._device_series.setdefault(item.device_id, {})
            for r in item.readings:
                known[(r.key, r.kind)] = self._series[
                    (item.device_id, self._keys[(r.key, int(r.kind))])
                ]

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
        rows: list[list[Row]],
        *,
        careful: bool,
        defer: bool = False,
    ) -> WriteResult:
        inserted: Inserted = [None] * len(rows)
        for kind in Kind:
            if rows[kind]:
                db_rows = self._db_rows(kind, rows[kind])
                if self.dialect.pg and kind is Kind.NUMBER and not careful:
                    self._copy_numbers_pg(connection, db_rows)
                elif self.dialect.pg:
                    inserted[kind] = self._store_pg(connection, kind, db_rows)
                else:
                    inserted[kind] = self._store_sqlite(connection, kind, db_rows, careful=careful)
        if self.dialect.pg:
            self._merge_pg(connection, logged=len(rows[Kind.NUMBER]), defer=defer)
        if all(new is None for new in inserted):  # the usual case: nothing was a duplicate
            return WriteResult(_AllStored(batch, rows), [len(item.readings) for item in batch])
        per_item = [0] * len(batch)
        stored = _stored(batch, rows, inserted, per_item)
        return WriteResult(stored, per_item, sum(len(r) for r in rows) - len(stored))

    def _db_rows(self, kind: Kind, rows: list[Row]) -> list[Row]:
        if kind is Kind.JSON:
            return [(sid, ts, _json(value)) for sid, ts, value in rows]
        if kind is Kind.BOOLEAN and not self.dialect.pg:
            return [(sid, ts, int(value)) for sid, ts, value in rows]
        return rows

    # -- PostgreSQL ---------------------------------------------------------------------

    def _copy_numbers_pg(self, connection: Connection, rows: list[Row]) -> None:
        """Log the numbers and copy them straight into ts_num; _Duplicates when one was
        already stored or is twice in the batch (the transaction is then void)."""
        # Sorted by key, as the staged INSERT: concurrent writers wait for each other's rows
        # in one order. (Numbers compare, should a (series, ts) come twice.)
        rows = sorted(rows)
        series_ids, stamps, values = zip(*rows, strict=True)
        if min(stamps) < packed.late_before():  # may meet packed readings: careful, then
            raise _Duplicates
        # Through SQLAlchemy first: that begins the transaction the COPY must be part of.
        connection.exec_driver_sql(pg_sql.LOG_SQL, (list(series_ids), list(stamps), list(values)))
        raw = connection.connection.driver_connection
        try:
            await_only(
                raw.copy_records_to_table(  # type: ignore[union-attr]
                    VALUE_TABLES[Kind.NUMBER].name,
                    records=rows,
                    columns=("series_id", "ts", "value"),
                )
            )
        except asyncpg.UniqueViolationError:
            raise _Duplicates from None

    def _store_pg(
        self, connection: Connection, kind: Kind, rows: list[Row]
    ) -> set[tuple[int, int]] | None:
        """Copy the rows into the stage, insert the new ones (numbers logged, others merged
        into latest); None when all were new, else the (series_id, ts) inserted. Numbers go
        this way only `careful`ly."""
        # Through SQLAlchemy first: that begins the transaction the COPY must be part of.
        connection.exec_driver_sql(pg_sql.stage_sql(kind))
        raw = connection.connection.driver_connection
        await_only(
            raw.copy_records_to_table(  # type: ignore[union-attr]
                pg_sql.stage_name(kind), records=rows, columns=("series_id", "ts", "value")
            )
        )
        if kind is Kind.NUMBER:
            self._drop_packed_pg(connection, rows)
        result = connection.exec_driver_sql(self._pg_sql(kind), (len(rows),)).one()
        count, new_series, new_stamps = int(result[0]), result[1], result[2]
        if count == len(rows):
            return None
        if kind is Kind.NUMBER:  # not logged yet: which ones were new
            new_series, new_stamps = connection.exec_driver_sql(pg_sql.new_numbers_sql()).one()
        return set(zip(new_series or (), new_stamps or (), strict=True))

    def _drop_packed_pg(self, connection: Connection, rows: list[Row]) -> None:
        """Late numbers (older than packed.LATE_MS): remove from the stage those already
        packed, under the packing lock held shared (the rule is in packed.py); the insert
        then counts them as duplicates. Recent batches skip this at the cost of a min()."""
        before = packed.late_before()
        if min(ts for _, ts, _ in rows) >= before:
            return
        connection.exec_driver_sql(pg_sql.LATE_LOCK_SQL, (packed.PACK_LOCK_KEY,))
        connection.exec_driver_sql(pg_sql.DROP_PACKED_SQL, (before,))

    def _pg_sql(self, kind: Kind) -> str:
        sql = self._sql.get(("pg", kind.name))
        if sql is None:
            sql = self._sql[("pg", kind.name)] = pg_sql.insert_sql(kind)
        return sql

    def _merge_pg(self, connection: Connection, *, logged: int, defer: bool) -> None:
        """Count the numbers logged; unless deferring, merge every logged number into the
        roll-ups and latest values (any writer's log rows: a crashed writer's too)."""
        if logged and not self._unmerged:
            self._oldest_unmerged = time.monotonic()
        self._unmerged += logged
        if defer or not self._unmerged:
            return
        connection.exec_driver_sql(self._apply_sql())
        self._unmerged = 0  # a rollback leaves the rows logged: merged by the next merge

    def _merge_due(self) -> bool:
        return self._unmerged > 0 and (
            self._unmerged >= DEFER_READINGS
            or time.monotonic() - self._oldest_unmerged >= DEFER_SECONDS
        )

    async def _merge_in_background(self) -> None:
        """Merge the logged numbers in a transaction of its own, beside the next inserts
        (another connection; the rows it locks are not the ones they lock)."""
        try:
            async with self.engine.begin() as connection:
                await connection.exec_driver_sql(self._apply_sql())
        except Exception:
            log.exception("telemetry_rollup_merge_failed")
            self._unmerged = max(self._unmerged, 1)  # still logged: the next merge takes them
        finally:
            self._merging = None

    def _apply_sql(self) -> str:
        sql = self._sql.get(("pg", "apply"))
        if sql is None:
            sql = self._sql[("pg", "apply")] = pg_sql.apply_sql()
        return sql

    # -- SQLite -------------------------------------------------------------------------

    def _store_sqlite(
        self, connection: Connection, kind: Kind, rows: list[Row], *, careful: bool
    ) -> set[tuple[int, int]] | None:
        """Stage the rows, insert the new ones, merge them into roll-ups and latest; None
        when all were new, else the (series_id, ts) inserted.

        Duplicates are rare (redeliveries), so at first the rows go straight from the stage
        into the table, and _Duplicates is raised if fewer went in than were sent; the
        caller then rolls back and comes again `careful`: the stage is first cleared of the
        rows already stored.
        """
        late = kind is Kind.NUMBER and min(ts for _, ts, _ in rows) < packed.late_before()
        if late and not careful:  # may meet packed readings: find out which, carefully
            raise _Duplicates
        table = VALUE_TABLES[kind].name
        stage = f"stage_{table}"
        connection.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (series_id INTEGER NOT NULL, "
            f"ts INTEGER NOT NULL, value {pg_sql.STAGE_TYPES[kind][0]}, "
            "PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
        )
        connection.exec_driver_sql(f"DELETE FROM {stage}")
        for chunk in _chunks(rows, _SQLITE_CHUNK):
            # OR IGNORE: a reading twice in the batch keeps its first copy
            connection.exec_driver_sql(
                self._sqlite_values_sql(stage, len(chunk)),
                tuple(itertools.chain.from_iterable(chunk)),
            )
        inserted: set[tuple[int, int]] | None = None
        if careful:
            existing = self._drop_packed_sqlite(connection) if late else []
            existing += connection.exec_driver_sql(
                f"DELETE FROM {stage} WHERE EXISTS (SELECT 1 FROM {table} AS t "
                f"WHERE t.series_id = {stage}.series_id AND t.ts = {stage}.ts) "
                "RETURNING series_id, ts"
            ).fetchall()
            old = {(int(sid), int(ts)) for sid, ts in existing}
            inserted = {(sid, ts) for sid, ts, _ in rows} - old
        raw = connection.connection.driver_connection  # the sqlite3 connection
        before = raw.total_changes  # type: ignore[union-attr]
        connection.exec_driver_sql(
            f"INSERT OR IGNORE INTO {table} (series_id, ts, value) "
            f"SELECT series_id, ts, value FROM {stage}"
        )
        if not careful and raw.total_changes - before != len(rows):  # type: ignore[union-attr]
            raise _Duplicates
        if kind is Kind.NUMBER:
            for width, rollup in ROLLUPS.items():
                connection.exec_driver_sql(
                    pg_sql.rollup_sql(rollup.name, width, stage, least="min", greatest="max")
                )
        connection.exec_driver_sql(
            f"INSERT INTO ts_latest (series_id, ts, {pg_sql.LATEST_COLUMN[kind]}) "
            f"SELECT series_id, max(ts), value FROM {stage} WHERE true GROUP BY series_id "
            f"ON CONFLICT (series_id) DO UPDATE SET {pg_sql.LATEST_UPDATE}"
        )
        return inserted

    def _drop_packed_sqlite(self, connection: Connection) -> list[Any]:
        """Late numbers: remove from the stage those already packed (first write wins). The
        compactor's transactions and this one exclude each other: one writer at a time."""
        before = packed.late_before()
        return list(
            connection.exec_driver_sql(sqlite_packing.DROP_PACKED_SQL, (before, before)).fetchall()
        )

    def _sqlite_values_sql(self, stage: str, count: int) -> str:
        key = ("values", stage, str(count))
        sql = self._sql.get(key)
        if sql is None:
            sql = self._sql[key] = (
                f"INSERT OR IGNORE INTO {stage} (series_id, ts, value) VALUES "
                + ", ".join(["(?, ?, ?)"] * count)
            )
        return sql


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
