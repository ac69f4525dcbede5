"""Reading numbers across raw and packed rows, and the rule that keeps the two apart.

Compaction (compaction.py) moves the readings of closed hours of numeric series from ts_num
into ts_num_packed, one row of two arrays per series and hour. A (series_id, ts) is in one
of the two, never both, so a reader takes the union: `number_rows` (or its two arms,
`number_arms`) is what every reader of ts_num uses (raw pages, exports, rule dry-runs,
analytics replays, the commands' safety gate). On PostgreSQL a packed row's arrays are
unnested in SQL; on SQLite its hour is zlib'd JSON ({"offset": value, ...}) that the
connection's fc_inflate function (db.py) inflates and json_each unnests, the same query
shape (sqlite_packing.py says why that encoding).

What keeps raw and packed apart when readings come late (the concurrency rule, shared by
the writer and the compactor):

- The compactor packs only readings older than a whole day (`MIN_AGE_MS`; its cut-off is a
  day boundary at least `compact_after_days` ≥ 1 back), and each of its transactions first
  takes `PACK_LOCK_KEY` exclusively (pg_advisory_xact_lock). On SQLite every write
  transaction already excludes the others (BEGIN IMMEDIATE): no lock is taken there.
- The writer sends a batch whose oldest number is older than `LATE_MS` (23 h: an hour of
  margin for clocks and slow transactions) down its careful path, which takes the same
  lock shared, then drops from the batch every reading already packed before inserting the
  rest raw (first write wins, as for raw duplicates). Batches of recent readings, the hot
  path, compare one timestamp and take no lock: nothing they write can be packed yet.
- Late raw rows of a packed hour stay raw (readers see both) until the next compaction
  run re-packs that hour with them. Moving readings changes no roll-up or latest value,
  and late readings reach those through the writer's log like any other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Subquery,
    TableValuedAlias,
    and_,
    case,
    cast,
    func,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.advisory_locks import LockKey
from fleetcore.db import SQLITE_INFLATE
from fleetcore.telemetry.models import PACKED_NUM, VALUE_TABLES
from fleetcore_protocol.telemetry import Kind

HOUR_MS = 3_600_000
BLOCK_MS = HOUR_MS  # one packed row per series and hour (bench/telemetry_compaction.py)
MIN_AGE_MS = 86_400_000  # the compactor never packs a reading younger than this
LATE_MS = MIN_AGE_MS - HOUR_MS  # the writer checks packed rows for readings older than this
EARLIEST_TS, LATEST_TS = -(2**62), 2**62  # "any time" bounds, far from bigint overflow
PACK_LOCK_KEY = LockKey.TELEMETRY_PACK  # xact lock: compactor exclusive, late writers shared


def late_before(now_ms: int | None = None) -> int:
    """Numbers older than this (epoch ms) may meet packed rows: the writer's careful path."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return now - LATE_MS


def block_of(ts: int) -> int:
    """The start of the packed block holding `ts` (floor, negative stamps included)."""
    return ts - ts % BLOCK_MS  # Python's % floors


def number_arms(
    series_id: int, lo: int, hi: int, *, limit: int, descending: bool = False, pg: bool
) -> list[Select[Any]]:
    """(series_id, ts, value) of one numeric series in [lo, hi): the raw rows and the packed
    ones, each arm its first `limit` in ts order. Their union holds the first `limit`
    readings of the series; a caller that sorts anyway merges them itself."""
    raw = VALUE_TABLES[Kind.NUMBER]
    raw_arm = (
        select(raw.c.series_id, raw.c.ts, raw.c.value)
        .where(raw.c.series_id == series_id, raw.c.ts >= lo, raw.c.ts < hi)
        .order_by(raw.c.ts.desc() if descending else raw.c.ts)
        .limit(limit)
    )
    p = PACKED_NUM.c
    cells, cell_ts, cell_value = _cells(pg=pg)
    ts = cell_ts.label("ts")
    packed_arm = (
        select(p.series_id, ts, cell_value.label("value"))
        .select_from(PACKED_NUM)
        .join(cells, true())  # a function in FROM may read the rows before it (lateral)
        .where(
            p.series_id == series_id,
            p.block.in_(_first_blocks(series_id, lo, hi, limit=limit, descending=descending)),
            _cells_within(cell_ts, lo, hi),
        )
        .order_by(ts.desc() if descending else ts)
        .limit(limit)
    )
    return [raw_arm, packed_arm]


def _cells(*, pg: bool) -> tuple[TableValuedAlias, ColumnElement[int], ColumnElement[float]]:
    """A packed row's readings as rows (to join after ts_num_packed): the function in FROM,
    each reading's ts and its value."""
    p = PACKED_NUM.c
    if pg:
        cells = func.unnest(p.offs, p.vals).table_valued("o", "v").render_derived(name="u")
        return cells, p.block + cells.c.o, cells.c.v
    # json_each walks the object in the order it was written: offsets ascending.
    inflated = getattr(func, SQLITE_INFLATE)(p.vals)
    cells = func.json_each(inflated).table_valued("key", "value").alias("u")
    return cells, p.block + cast(cells.c.key, BigInteger), cells.c.value


def _cells_within(cell_ts: ColumnElement[int], lo: int, hi: int) -> ColumnElement[bool]:
    """A packed reading is in [lo, hi). Only the first and last hour of a range can hold
    readings outside it: the hours wholly inside skip the per-reading test (about a tenth of
    the CPU of a day's read on SQLite, where each test casts a JSON key)."""
    p = PACKED_NUM.c
    return or_(and_(p.block >= lo, p.block + BLOCK_MS <= hi), and_(cell_ts >= lo, cell_ts < hi))


def _first_blocks(series_id: int, lo: int, hi: int, *, limit: int, descending: bool) -> Select[Any]:
    """The blocks of [lo, hi) a page of `limit` may need, in page order: every one until
    the blocks wholly inside the range before it hold `limit` readings. Read from the
    counts, without touching the arrays: a page of 100 unpacks one block or two, not all."""
    p = PACKED_NUM.c
    inside = case((and_(p.block >= lo, p.block + BLOCK_MS <= hi), p.n), else_=0)
    order = p.block.desc() if descending else p.block
    before = func.sum(inside).over(order_by=order, rows=(None, -1))
    candidates = (
        select(p.block, before.label("before"))
        .where(
            p.series_id == series_id,
            p.block > lo - BLOCK_MS,  # a block starting before lo may still hold lo
            p.block < hi,
        )
        .subquery()
    )
    return select(candidates.c.block).where(
        or_(candidates.c.before.is_(None), candidates.c.before < limit)
    )


def number_rows(
    series_id: int, lo: int, hi: int, *, limit: int, descending: bool = False, pg: bool
) -> Select[Any]:
    """(series_id, ts, value) of one numeric series in [lo, hi), up to `limit` in ts order,
    raw and packed alike."""
    arms = number_arms(series_id, lo, hi, limit=limit, descending=descending, pg=pg)
    if len(arms) == 1:
        return arms[0]
    both = union_all(*(select(arm.subquery()) for arm in arms)).subquery()
    return (
        select(both.c.series_id, both.c.ts, both.c.value)
        .order_by(both.c.ts.desc() if descending else both.c.ts)
        .limit(limit)
    )


async def newest_number(
    db: AsyncSession, series_id: int, *, at_most: int = LATEST_TS
) -> tuple[int, float] | None:
    """The newest (ts, value) of a numeric series with ts ≤ `at_most`, raw or packed."""
    pg = db.get_bind().dialect.name == "postgresql"
    query = number_rows(series_id, EARLIEST_TS, at_most + 1, limit=1, descending=True, pg=pg)
    row = (await db.execute(query)).first()
    return None if row is None else (int(row.ts), float(row.value))


def numbers_between(series_ids: Sequence[int], lo: int, hi: int, *, pg: bool) -> Subquery:
    """(series_id, ts, value) of these numeric series in [lo, hi), raw and packed, unordered:
    for grouping reads over a bounded range (chart buckets under a minute)."""
    raw = VALUE_TABLES[Kind.NUMBER]
    ids = list(series_ids)
    raw_rows = select(raw.c.series_id, raw.c.ts, raw.c.value).where(
        raw.c.series_id.in_(ids), raw.c.ts >= lo, raw.c.ts < hi
    )
    p = PACKED_NUM.c
    cells, cell_ts, cell_value = _cells(pg=pg)
    packed_rows = (
        select(p.series_id, cell_ts.label("ts"), cell_value.label("value"))
        .select_from(PACKED_NUM)
        .join(cells, true())
        .where(
            p.series_id.in_(ids),
            p.block > lo - BLOCK_MS,
            p.block < hi,
            _cells_within(cell_ts, lo, hi),
        )
    )
    return union_all(raw_rows, packed_rows).subquery()
