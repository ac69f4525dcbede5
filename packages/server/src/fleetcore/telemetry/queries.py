"""Reading telemetry: raw readings a page at a time, aggregates from the roll-ups, latest values.

Raw pages read each series by its primary key (series_id, ts) with its own LIMIT, so a page
costs at most `limit` rows per series whatever the range; numeric series are read across
raw and packed rows alike (packed.py), packed hours by their (series_id, block) key.
Aggregates read only the roll-up tables (the coarsest whose bucket divides the interval), by
(series_id, bucket) ranges. Chart buckets (chart.py) come from the same roll-ups, or from raw
(and packed) readings for steps under a minute (a range of at most `width` minutes, so a
bounded read).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import ClauseElement, ColumnElement, Select, func, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.devices.service import get_device, live_devices
from fleetcore.telemetry.models import LATEST, ROLLUPS, VALUE_TABLES, Series
from fleetcore.telemetry.models import TelemetryKey as Key
from fleetcore.telemetry.packed import number_arms, numbers_between
from fleetcore.telemetry.query_schemas import (
    INTERVALS,
    Agg,
    Aggregates,
    Bucket,
    DeviceLatest,
    Interval,
    LatestValue,
    ManyLatest,
    bucket_range,
    decode_cursor,
    encode_cursor,
    time_range,
)
from fleetcore_protocol.telemetry import Kind

Executor = AsyncSession | AsyncConnection
MAX_DEVICE_IDS = 500
_ARMS_PER_QUERY = 200  # SQLite allows 500 terms in one compound SELECT


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """One series of a device: its id, key name and kind."""

    id: int
    key: str
    kind: Kind


class Row(NamedTuple):
    """One stored reading, typed (a tuple: exports make millions)."""

    ts: int
    key: str
    kind: Kind
    value: Any


async def device_series(
    db: Executor,
    device_id: uuid.UUID,
    org_id: uuid.UUID,
    keys: Sequence[str] = (),
    *,
    kind: Kind | None = None,
) -> list[SeriesRef]:
    """The device's series (of these keys, of this kind), by key name and kind."""
    query = (
        select(Series.id, Key.name, Key.kind)
        .join(Key, Key.id == Series.key_id)
        .where(Series.device_id == device_id, Series.organization_id == org_id)
        .order_by(Key.name, Key.kind)
    )
    if keys:
        query = query.where(Key.name.in_(list(keys)))
    if kind is not None:
        query = query.where(Key.kind == int(kind))
    return [SeriesRef(sid, name, Kind(k)) for sid, name, k in (await db.execute(query)).all()]


def is_postgresql(db: Executor) -> bool:
    """Whether `db` talks to PostgreSQL (packed readings are unnested differently)."""
    bind = db.get_bind() if isinstance(db, AsyncSession) else db
    return bind.dialect.name == "postgresql"


def _bounds(
    s: SeriesRef, start: int, end: int, after: tuple[int, str, Kind] | None, descending: bool
) -> tuple[int, int]:
    """The [lo, hi) of ts this series may still contribute after the cursor."""
    if after is None:
        return start, end
    ts, key, kind = after
    if descending:  # after = smaller (ts, key, kind)
        return start, min(end, ts + 1 if (s.key, s.kind) < (key, kind) else ts)
    return max(start, ts if (s.key, s.kind) > (key, kind) else ts + 1), end


async def read_rows(
    db: Executor,
    series: Sequence[SeriesRef],
    start: int,
    end: int,
    *,
    limit: int,
    after: tuple[int, str, Kind] | None = None,
    descending: bool = False,
) -> list[Row]:
    """Up to `limit` readings in [start, end) after the cursor, in (ts, key, kind) order."""
    by_id = {s.id: s for s in series}
    pg = is_postgresql(db)
    rows: list[Row] = []
    queried = 0
    for kind in Kind:
        table = VALUE_TABLES[kind]
        arms = []
        for s in series:
            lo, hi = _bounds(s, start, end, after, descending) if s.kind is kind else (0, 0)
            if lo < hi and kind is Kind.NUMBER:  # raw and packed (compaction), sorted below
                arms += number_arms(s.id, lo, hi, limit=limit, descending=descending, pg=pg)
            elif lo < hi:
                arms.append(
                    select(table.c.series_id, table.c.ts, table.c.value)
                    .where(table.c.series_id == s.id, table.c.ts >= lo, table.c.ts < hi)
                    .order_by(table.c.ts.desc() if descending else table.c.ts)
                    .limit(limit)
                )
        queried += len(arms)
        for first in range(0, len(arms), _ARMS_PER_QUERY):
            chunk = arms[first : first + _ARMS_PER_QUERY]
            query = (
                chunk[0] if len(chunk) == 1 else union_all(*(select(a.subquery()) for a in chunk))
            )
            found = (
                await fetch_plain(db, query)
                if kind is Kind.NUMBER
                else (await db.execute(query)).all()
            )
            for sid, ts, value in found:
                ref = by_id[sid]
                rows.append(Row(ts, ref.key, ref.kind, value))
    if queried > 1 and len(series) == 1:  # a number's raw and packed arms: ts is unique
        rows.sort(key=itemgetter(0), reverse=descending)
    elif queried > 1:  # one arm comes in ts order already
        rows.sort(key=lambda r: (r.ts, r.key, r.kind), reverse=descending)
    return rows[:limit]


async def fetch_plain(db: Executor, query: ClauseElement) -> Sequence[Sequence[Any]]:
    """The rows of a query whose columns need no conversion (integers, floats), straight
    from the driver: at a day of 1-second readings, SQLAlchemy's row objects and result
    processing cost several times the read itself. Same connection, same transaction."""
    connection = db if isinstance(db, AsyncConnection) else await db.connection()
    compiled = query.compile(
        dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
    )
    assert isinstance(compiled, SQLCompiler)  # both dialects' are positional: $n and ?
    values = compiled.construct_params()
    params = [values[name] for name in compiled.positiontup or ()]
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "postgresql":  # asyncpg
        records: Sequence[Sequence[Any]] = await driver.fetch(str(compiled), *params)
        return records
    async with driver.execute(str(compiled), params) as cursor:  # aiosqlite
        rows: Sequence[Sequence[Any]] = await cursor.fetchall()
        return rows


@dataclass(frozen=True, slots=True)
class RawPage:
    """A page of raw readings as read: plain rows, not models (a page may hold 100,000)."""

    device_id: uuid.UUID
    rows: list[Row]
    next_cursor: str | None

    def json(self) -> bytes:
        """The page as `ReadingsPage` JSON, without building a model per reading: pydantic
        took ~3 µs a reading to build and dump, orjson 0.2 µs (bench/telemetry_longrange)."""
        return orjson.dumps(
            {
                "device_id": str(self.device_id),
                "items": [{"key": r.key, "ts": r.ts, "value": r.value} for r in self.rows],
                "next_cursor": self.next_cursor,
            }
        )


async def read_readings(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: uuid.UUID,
    keys: Sequence[str],
    start: str | None,
    end: str | None,
    limit: int,
    cursor: str | None,
    descending: bool,
) -> RawPage:
    """Raw readings of a device of the caller's organization, a page at a time."""
    start_ms, end_ms = time_range(start, end)
    after = decode_cursor(cursor) if cursor else None
    device = await get_device(session, principal, device_id)
    series = await device_series(session, device.id, device.organization_id, keys)
    rows = await read_rows(
        session, series, start_ms, end_ms, limit=limit + 1, after=after, descending=descending
    )
    next_cursor = None
    if len(rows) > limit:
        del rows[limit:]
        next_cursor = encode_cursor(rows[-1].ts, rows[-1].key, rows[-1].kind)
    return RawPage(device.id, rows, next_cursor)


def rollup_width(width: int) -> int:
    """The bucket of the coarsest roll-up that divides `width` ms (0: none, read raw rows)."""
    return max((w for w in ROLLUPS if width % w == 0), default=0)


def _floor(column: ColumnElement[Any], width: int) -> ColumnElement[Any]:
    # Inlined (not bound) so GROUP BY and SELECT hold the same expression; a floor, also
    # for times before 1970 (SQL's % keeps the dividend's sign).
    w: ColumnElement[Any] = literal_column(str(int(width)))
    return column - (column % w + w) % w


def aggregate_query(
    series_ids: Sequence[int],
    start: int,
    end: int,
    width: int,
    agg: Agg,
    *,
    source: int | None = None,
) -> Select[Any]:
    """(series_id, bucket, value) per bucket of `width` ms in [start, end), from the roll-up
    of `source` ms buckets (default: the coarsest dividing `width`)."""
    source = source or rollup_width(width)
    c = ROLLUPS[source].c
    within = (c.series_id.in_(list(series_ids)), c.bucket >= start, c.bucket < end)
    if width == source:  # one roll-up row per bucket: nothing to combine
        one: dict[str, ColumnElement[Any]] = {
            "avg": c.total / c.cnt,
            "sum": c.total,
            "count": c.cnt,
            "min": c.vmin,
            "max": c.vmax,
            "first": c.vfirst,
            "last": c.vlast,
        }
        return select(c.series_id, c.bucket, one[agg]).where(*within)
    group = _floor(c.bucket, width).label("g")
    if agg in ("first", "last"):
        ts_col, value = (
            (c.first_ts.asc(), c.vfirst) if agg == "first" else (c.last_ts.desc(), c.vlast)
        )
        rank = func.row_number().over(partition_by=(c.series_id, group), order_by=ts_col)
        ranked = select(c.series_id, group, value.label("v"), rank.label("rn")).where(*within)
        sub = ranked.subquery()
        return select(sub.c.series_id, sub.c.g, sub.c.v).where(sub.c.rn == 1)
    combined: dict[str, ColumnElement[Any]] = {
        "avg": func.sum(c.total) / func.sum(c.cnt),
        "sum": func.sum(c.total),
        "count": func.sum(c.cnt),
        "min": func.min(c.vmin),
        "max": func.max(c.vmax),
    }
    return select(c.series_id, group, combined[agg]).where(*within).group_by(c.series_id, group)


async def read_aggregates(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: uuid.UUID,
    keys: Sequence[str],
    start: str | None,
    end: str | None,
    interval: Interval,
    agg: Agg,
) -> Aggregates:
    """Numeric keys per interval from the roll-ups; every bucket present, empty ones null."""
    width = INTERVALS[interval]
    start_ms, end_ms = time_range(start, end)
    first, stop = bucket_range(start_ms, end_ms, width)
    device = await get_device(session, principal, device_id)
    series = await device_series(session, device.id, device.organization_id, keys, kind=Kind.NUMBER)
    names = list(keys) if keys else [s.key for s in series]
    buckets = [Bucket(ts=b, values=dict.fromkeys(names)) for b in range(first, stop, width)]
    if series and buckets:
        key_of = {s.id: s.key for s in series}
        query = aggregate_query(list(key_of), first, stop, width, agg)
        for sid, bucket, value in (await session.execute(query)).all():
            buckets[(bucket - first) // width].values[key_of[sid]] = value
    return Aggregates(
        device_id=device.id,
        interval=interval,
        agg=agg,
        start=first,
        end=stop,
        buckets=buckets,
    )


@dataclass(slots=True)
class ChartColumns:
    """One series' chart buckets, column-wise (bucket start, min, max, mean)."""

    ts: list[int] = field(default_factory=list)
    vmin: list[float] = field(default_factory=list)
    vmax: list[float] = field(default_factory=list)
    avg: list[float] = field(default_factory=list)


def chart_query(
    series_ids: Sequence[int], first: int, stop: int, step: int, *, pg: bool = False
) -> Select[Any]:
    """(series_id, bucket, min, max, mean) per `step` ms bucket holding data in [first, stop),
    in (series_id, bucket) order: from the coarsest roll-up dividing `step`, else raw rows
    and packed ones (`pg`: which way to unnest them)."""
    ids = list(series_ids)
    source = rollup_width(step)
    if not source:
        raw = numbers_between(ids, first, stop, pg=pg).c
        group = _floor(raw.ts, step).label("g")
        return (
            select(
                raw.series_id,
                group,
                func.min(raw.value),
                func.max(raw.value),
                func.sum(raw.value) / func.count(),
            )
            .group_by(raw.series_id, group)
            .order_by(raw.series_id, group)
        )
    c = ROLLUPS[source].c
    within = (c.series_id.in_(ids), c.bucket >= first, c.bucket < stop)
    if step == source:  # one roll-up row per bucket
        columns = (c.series_id, c.bucket, c.vmin, c.vmax, c.total / c.cnt)
        return select(*columns).where(*within).order_by(c.series_id, c.bucket)
    group = _floor(c.bucket, step).label("g")
    combined = (func.min(c.vmin), func.max(c.vmax), func.sum(c.total) / func.sum(c.cnt))
    return (
        select(c.series_id, group, *combined)
        .where(*within)
        .group_by(c.series_id, group)
        .order_by(c.series_id, group)
    )


async def chart_buckets(
    db: Executor, series: Sequence[SeriesRef], first: int, stop: int, step: int
) -> dict[str, ChartColumns]:
    """Every numeric series' buckets of `step` ms holding data in [first, stop), by key."""
    out = {s.key: ChartColumns() for s in series if s.kind is Kind.NUMBER}
    key_of = {s.id: s.key for s in series if s.kind is Kind.NUMBER}
    if not key_of or stop <= first:
        return out
    for sid, bucket, vmin, vmax, avg in (
        await db.execute(chart_query(list(key_of), first, stop, step, pg=is_postgresql(db)))
    ).all():
        columns = out[key_of[sid]]
        columns.ts.append(bucket)
        columns.vmin.append(vmin)
        columns.vmax.append(vmax)
        columns.avg.append(avg)
    return out


async def latest_values(
    session: AsyncSession, org_id: uuid.UUID, device_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, LatestValue]]:
    """The newest value of every key of these devices of one organization."""
    query = (
        select(
            Series.device_id,
            Key.name,
            Key.kind,
            LATEST.c.ts,
            LATEST.c.num,
            LATEST.c.text,
            LATEST.c.bool,
            LATEST.c.json,
        )
        .select_from(LATEST)
        .join(Series, Series.id == LATEST.c.series_id)
        .join(Key, Key.id == Series.key_id)
        .where(Series.device_id.in_(list(device_ids)), Series.organization_id == org_id)
    )
    found: dict[uuid.UUID, dict[str, LatestValue]] = {d: {} for d in device_ids}
    for device_id, name, kind, ts, *columns in (await session.execute(query)).all():
        values = found[device_id]
        if name not in values or values[name].ts < ts:  # one name in two kinds: the newer
            values[name] = LatestValue(ts=ts, value=columns[kind - 1])
    return found


async def latest_of_device(
    session: AsyncSession, principal: Principal, *, device_id: uuid.UUID
) -> DeviceLatest:
    """The newest value of every key of a device of the caller's organization."""
    device = await get_device(session, principal, device_id)
    found = await latest_values(session, device.organization_id, [device.id])
    return DeviceLatest(device_id=device.id, values=found[device.id])


async def latest_of_devices(
    session: AsyncSession, principal: Principal, *, device_ids: Sequence[uuid.UUID]
) -> ManyLatest:
    """Latest values of the caller's devices among `device_ids`; others are simply absent."""
    org_id = principal.org_id
    mine = list(
        (
            await session.scalars(
                live_devices(org_id)
                .with_only_columns(Device.id)
                .where(Device.id.in_(list(device_ids)))
            )
        ).all()
    )
    found = await latest_values(session, org_id, mine) if mine else {}
    return ManyLatest(devices={str(d): values for d, values in found.items()})
