"""Compaction on SQLite: closed hours of numeric series as zlib'd JSON, still read in SQL.

Each ts_num_packed row holds one series' hour in `vals` as zlib-compressed JSON,
{"<ms offset>": value, ...} in offset order (`offs` stays empty). Every SQLite connection
has fc_inflate (db.py), so readers unnest a row with json_each(fc_inflate(vals)) in the
same query shape as PostgreSQL's unnest (packed.py).

Why (bench/telemetry_compaction.py, SQLite 3.40, 4 KiB pages, bytes a reading on disk for
10-second temperatures / random doubles; raw rows 25.1 / 25.3):
- JSON arrays for json_each (offsets, values): 14.2 / 26.6, and two arrays cannot be
  zipped in SQL (json_each takes no key constraint, so joining them is quadratic per hour);
  one JSON object zips itself but weighs 17.1 / 32.4: worse than raw for random values.
- A self-encoded blob (numpy delta stamps, byte-shuffled float64, zlib): 6.0 / 7.5 of
  payload, 11.5 / 11.5 stored (an hour's row fills most of a page), and every reader would
  need a Python decode branch beside its SQL.
- zlib'd JSON object (chosen): 4.7 / 12.9 of payload, 5.8 / 13.1 stored, and read in SQL.
  Values are written with Python's repr (shortest round-trip) and json_each parses them
  back bit-exact (1.4 M random doubles checked); SQLite's own JSON printing (15 digits) is
  never used. Infinities stay raw: JSON has no such number.
The table has rowids (migration 0031): a WITHOUT ROWID table keeps at most ~1 KiB of a row
in its page and gives the rest overflow pages of their own (13 B a reading here).

Writing: a transaction (BEGIN IMMEDIATE) per chunk of one series' hours (about
`chunk_readings`): the raw rows read, merged with what their hours already hold (the packed
copy wins should both hold a ts), the packed rows written and the raw ones deleted. SQLite
has one writer at a time, so a chunk excludes the telemetry writer for its few tens of ms
(the writer waits on busy_timeout) and no packing lock is needed: a late batch commits
either before a chunk (packed by it) or after (it drops what is packed, writer.py).

Space: SQLite keeps the pages freed by the deleted rows and reuses them for new readings;
the file only shrinks by vacuum. New databases are created with auto_vacuum=INCREMENTAL
(db.py) and a run then hands the freed pages back, `VACUUM_PAGES` a transaction. A file
created before keeps auto_vacuum=NONE until a `VACUUM` (docs/architecture.md).
"""

# ruff: noqa: S608  # SQL built from this module's constants; values as parameters

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetcore.db import SQLITE_BEGIN_OPTION, SQLITE_INFLATE
from fleetcore.telemetry.packed import BLOCK_MS

CHUNK_READINGS = 50_000  # readings a transaction, about (~0.1 s of the write lock)
VACUUM_PAGES = 2_000  # pages handed back per transaction (8 MiB at 4 KiB pages)
_FINITE = "value BETWEEN -1.7976931348623157e308 AND 1.7976931348623157e308"
_BLOCK = f"(ts - ((ts % {BLOCK_MS}) + {BLOCK_MS}) % {BLOCK_MS})"  # floor, negatives too

# Late numbers (writer.py): the staged readings older than ? whose (series, ts) is packed
# already, removed (first write wins) and returned. Only the hours they fall in are opened.
DROP_PACKED_SQL = (
    "DELETE FROM stage_ts_num WHERE ts < ? AND (series_id, ts) IN (SELECT p.series_id, "
    "p.block + CAST(u.key AS INTEGER) FROM ts_num_packed AS p, "
    f"json_each({SQLITE_INFLATE}(p.vals)) AS u WHERE (p.series_id, p.block) IN "
    f"(SELECT DISTINCT series_id, {_BLOCK} FROM stage_ts_num WHERE ts < ?)) "
    "RETURNING series_id, ts"
)


class Report(Protocol):
    """What a run adds to (compaction.CompactionReport)."""

    cutoff_ms: int
    readings: int
    blocks: int
    series: int
    tables: list[str]
    pages_freed: int


def encode(cells: Iterable[tuple[int, float]]) -> bytes:
    """An hour's (ms offset, value) pairs, offsets ascending, as stored in `vals`."""
    body = ",".join(f'"{offset}":{float(value)!r}' for offset, value in cells)
    return zlib.compress(f"{{{body}}}".encode(), 6)


def decode(blob: bytes) -> dict[int, float]:
    """`vals` back to {ms offset: value}, in offset order."""
    return {int(k): float(v) for k, v in json.loads(zlib.decompress(blob)).items()}


async def plan(engine: AsyncEngine, report: Report) -> None:
    """Count what a run would pack (the dry run)."""
    async with engine.connect() as connection:
        row: Any = (
            await connection.exec_driver_sql(
                "SELECT count(*), count(DISTINCT series_id), (SELECT count(*) FROM "
                f"(SELECT DISTINCT series_id, {_BLOCK} FROM ts_num WHERE ts < ? AND {_FINITE})) "
                f"FROM ts_num WHERE ts < ? AND {_FINITE}",
                (report.cutoff_ms, report.cutoff_ms),
            )
        ).one()
    if row[0]:
        report.readings += int(row[0])
        report.series += int(row[1])
        report.blocks += int(row[2])
        report.tables.append("ts_num")


async def pack(engine: AsyncEngine, report: Report, chunk_readings: int) -> None:
    """Pack every finite reading before the cut-off, series by series, a chunk of hours per
    transaction; then hand freed pages back when the file allows it."""
    cutoff = report.cutoff_ms
    async with engine.connect() as connection:
        await connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        series_id = -(2**62)
        while (found := await _next_series(connection, series_id, cutoff)) is not None:
            series_id, first = found
            report.series += 1
            hours = 24  # adapted to the series' density: chunks of about chunk_readings
            lo = first - first % BLOCK_MS
            while lo < cutoff:
                hi = min(cutoff, lo + hours * BLOCK_MS)
                async with connection.begin():
                    moved, blocks = await _pack_chunk(connection, series_id, lo, hi)
                report.readings += moved
                report.blocks += blocks
                hours = max(1, min(24 * 31, hours * chunk_readings // max(1, moved)))
                lo = await _next_block(connection, series_id, hi, cutoff)
        if report.readings:
            report.tables.append("ts_num")
            report.pages_freed = await _vacuum(connection)


async def _next_series(
    connection: AsyncConnection, after: int, cutoff: int
) -> tuple[int, int] | None:
    """The next series (id order) with finite readings before the cut-off, and its oldest:
    index probes, not a scan of ts_num."""
    while True:
        found = (
            await connection.exec_driver_sql(
                "SELECT series_id FROM ts_num WHERE series_id > ? ORDER BY series_id LIMIT 1",
                (after,),
            )
        ).first()
        if found is None:
            return None
        after = int(found[0])
        oldest = (
            await connection.exec_driver_sql(
                f"SELECT min(ts) FROM ts_num WHERE series_id = ? AND ts < ? AND {_FINITE}",
                (after, cutoff),
            )
        ).scalar()
        await connection.commit()  # no read transaction left open between probes
        if oldest is not None:
            return after, int(oldest)


async def _next_block(connection: AsyncConnection, series_id: int, lo: int, cutoff: int) -> int:
    """The hour of the series' next finite reading in [lo, cutoff), else the cut-off."""
    oldest = (
        await connection.exec_driver_sql(
            f"SELECT min(ts) FROM ts_num WHERE series_id = ? AND ts >= ? AND ts < ? AND {_FINITE}",
            (series_id, lo, cutoff),
        )
    ).scalar()
    await connection.commit()
    return cutoff if oldest is None else int(oldest) - int(oldest) % BLOCK_MS


async def _pack_chunk(
    connection: AsyncConnection, series_id: int, lo: int, hi: int
) -> tuple[int, int]:
    """One transaction's work: the series' raw readings in [lo, hi) (whole hours) merged
    into their packed hours and deleted; returns (readings moved, hours written)."""
    params = (series_id, lo, hi)
    raw: list[Any] = list(
        await connection.exec_driver_sql(
            "SELECT ts, value FROM ts_num WHERE series_id = ? AND ts >= ? AND ts < ? "
            f"AND {_FINITE} ORDER BY ts",
            params,
        )
    )
    if not raw:
        return 0, 0
    held: list[Any] = list(
        await connection.exec_driver_sql(
            "SELECT block, vals FROM ts_num_packed WHERE series_id = ? AND block >= ? "
            "AND block < ?",
            params,
        )
    )
    hours = {int(block): decode(blob) for block, blob in held}
    touched: set[int] = set()
    for ts, value in raw:
        block = ts - ts % BLOCK_MS
        cells = hours.setdefault(block, {})
        cells.setdefault(ts - block, value)  # the packed copy wins: first write wins
        touched.add(block)
    rows = []
    for block in sorted(touched):
        cells = hours[block]
        rows.append((series_id, block, len(cells), b"", encode(sorted(cells.items()))))
    await connection.exec_driver_sql(
        "INSERT INTO ts_num_packed (series_id, block, n, offs, vals) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (series_id, block) DO UPDATE SET n = excluded.n, vals = excluded.vals",
        rows,
    )
    await connection.exec_driver_sql(
        f"DELETE FROM ts_num WHERE series_id = ? AND ts >= ? AND ts < ? AND {_FINITE}", params
    )
    return len(raw), len(rows)


async def _vacuum(connection: AsyncConnection) -> int:
    """Hand the file's free pages back, `VACUUM_PAGES` a transaction, if auto_vacuum is
    INCREMENTAL; returns the pages freed (0 otherwise: they wait for new readings)."""
    mode = (await connection.exec_driver_sql("PRAGMA auto_vacuum")).scalar()
    await connection.commit()
    if mode != 2:
        return 0
    freed, free = 0, await _free_pages(connection)
    while free:
        async with connection.begin():
            await connection.exec_driver_sql(f"PRAGMA incremental_vacuum({VACUUM_PAGES})")
        left = await _free_pages(connection)
        if left >= free:
            break  # nothing more came back
        freed, free = freed + free - left, left
    return freed


async def _free_pages(connection: AsyncConnection) -> int:
    free = int((await connection.exec_driver_sql("PRAGMA freelist_count")).scalar_one())
    await connection.commit()
    return free


def trim(blob: bytes, keep_from: int) -> dict[int, float]:
    """The cells of an hour at offsets ≥ `keep_from` (retention's straddling hour)."""
    return {offset: value for offset, value in decode(blob).items() if offset >= keep_from}
