"""Exporting a device's readings as CSV or Parquet, streamed in constant memory.

Each series is read by its primary key in chunks (a short connection per chunk; numbers
across raw and packed rows, packed.py) and the series are merged in (ts, key) order, so
memory holds a few chunks whatever the range.
"""

from __future__ import annotations

import csv
import heapq
import io
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.csv_cells import escape_cell
from fleetcore.db import Database
from fleetcore.devices.models import Device
from fleetcore.devices.service import get_device
from fleetcore.errors import Invalid
from fleetcore.telemetry.models import VALUE_TABLES
from fleetcore.telemetry.packed import number_rows
from fleetcore.telemetry.queries import Row, SeriesRef, device_series
from fleetcore.telemetry.query_schemas import ExportFormat, ms_to_iso, time_range
from fleetcore_protocol.telemetry import Kind

CHUNK_ROWS = 10_000
CSV_HEADER = ("ts", "ts_ms", "key", "value", "kind")  # kind: exact round trip through import
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
KIND_NAMES = {
    Kind.NUMBER: "number",
    Kind.TEXT: "string",
    Kind.BOOLEAN: "boolean",
    Kind.JSON: "json",
}


@dataclass(slots=True)
class _SeriesReader:
    series: SeriesRef
    next_ts: int
    rows: deque[tuple[int, Any]] = field(default_factory=deque)
    done: bool = False


def _chunk_query(series: SeriesRef, start: int, end: int, size: int, *, pg: bool) -> Select[Any]:
    """(series_id, ts, value) of one series in [start, end), `size` at a time."""
    if series.kind is Kind.NUMBER:  # raw and packed (compaction)
        return number_rows(series.id, start, end, limit=size, pg=pg)
    table = VALUE_TABLES[series.kind]
    return (
        select(table.c.series_id, table.c.ts, table.c.value)
        .where(table.c.series_id == series.id, table.c.ts >= start, table.c.ts < end)
        .order_by(table.c.ts)
        .limit(size)
    )


async def _fill(database: Database, reader: _SeriesReader, end: int, size: int) -> None:
    query = _chunk_query(
        reader.series, reader.next_ts, end, size, pg=database.dialect == "postgresql"
    )
    async with database.connect() as connection:
        rows = [(ts, value) for _, ts, value in (await connection.execute(query)).all()]
    reader.rows.extend(rows)
    reader.done = len(rows) < size
    if rows:
        reader.next_ts = rows[-1][0] + 1


async def iter_rows(
    database: Database,
    series: Sequence[SeriesRef],
    start: int,
    end: int,
    *,
    chunk: int = CHUNK_ROWS,
) -> AsyncIterator[list[Row]]:
    """The readings of `series` in [start, end), in (ts, key, kind) order, `chunk` at a time."""
    per_series = max(1_000, chunk // max(1, len(series)))
    readers = [_SeriesReader(s, start) for s in series]
    heap: list[tuple[int, str, Kind, int]] = []
    for index, reader in enumerate(readers):
        await _fill(database, reader, end, per_series)
        if reader.rows:
            heap.append((reader.rows[0][0], reader.series.key, reader.series.kind, index))
    heapq.heapify(heap)
    out: list[Row] = []
    while heap:
        _, key, kind, index = heap[0]
        reader = readers[index]
        if len(heap) == 1:  # one series left: no merging, take its buffer whole
            out.extend(Row(ts, key, kind, value) for ts, value in reader.rows)
            reader.rows.clear()
        else:
            ts, value = reader.rows.popleft()
            out.append(Row(ts, key, kind, value))
        if not reader.rows and not reader.done:
            await _fill(database, reader, end, per_series)
        if reader.rows:
            heapq.heapreplace(heap, (reader.rows[0][0], key, kind, index))
        else:
            heapq.heappop(heap)
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


def format_value(kind: Kind, value: Any) -> str:
    """A value as CSV text: numbers plainly, true/false, compact JSON."""
    if kind is Kind.NUMBER:
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    if kind is Kind.BOOLEAN:
        return "true" if value else "false"
    if kind is Kind.JSON:
        return orjson.dumps(value).decode()
    return str(value)


def csv_value(kind: Kind, value: Any) -> str:
    """A value's CSV cell: strings escaped so that no spreadsheet runs them (csv_cells)."""
    text = format_value(kind, value)
    return escape_cell(text) if kind is Kind.TEXT else text


async def csv_bytes(chunks: AsyncIterator[list[Row]]) -> AsyncIterator[bytes]:
    """CSV (ts ISO 8601 UTC, ts_ms, key, value, kind), one piece per chunk; key and string
    cells that a spreadsheet would run as a formula start with a quote."""
    buffer = io.StringIO()
    # CRLF (RFC 4180): Python 3.11 quotes a cell holding a line terminator character, and
    # with "\n" alone a carriage return inside a device string went out bare, ending the row.
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    yield buffer.getvalue().encode()
    async for rows in chunks:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(
            (
                ms_to_iso(r.ts),
                r.ts,
                escape_cell(r.key),
                csv_value(r.kind, r.value),
                KIND_NAMES[r.kind],
            )
            for r in rows
        )
        yield buffer.getvalue().encode()


class _Drain(io.RawIOBase):
    """A write-only sink whose bytes are taken after each row group."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def parquet_available() -> bool:
    """True when pyarrow (the `parquet` extra) is installed."""
    try:
        import pyarrow  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def require_parquet() -> None:
    """Invalid, naming the extra to install, unless pyarrow is available."""
    if not parquet_available():
        raise Invalid(
            "Parquet export needs pyarrow: install fleetcore[parquet]",
            code="PARQUET_UNAVAILABLE",
            details={"field": "format", "extra": "parquet"},
        )


async def parquet_bytes(chunks: AsyncIterator[list[Row]]) -> AsyncIterator[bytes]:
    """Parquet with columns ts, ts_ms, key, kind, number, text, boolean, json; a row group
    per chunk (exactly one of the value columns is set on each row)."""
    import pyarrow as pa
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = pa.schema(
        [
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("ts_ms", pa.int64()),
            ("key", pa.string()),
            ("kind", pa.string()),
            ("number", pa.float64()),
            ("text", pa.string()),
            ("boolean", pa.bool_()),
            ("json", pa.string()),
        ]
    )
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    try:
        async for rows in chunks:
            columns: dict[str, list[Any]] = {name: [] for name in schema.names}
            for r in rows:
                cells: list[Any] = [None, None, None, None]
                cells[r.kind - 1] = (
                    orjson.dumps(r.value).decode() if r.kind is Kind.JSON else r.value
                )
                for name, cell in zip(("number", "text", "boolean", "json"), cells, strict=True):
                    columns[name].append(cell)
                columns["ts"].append(r.ts)
                columns["ts_ms"].append(r.ts)
                columns["key"].append(r.key)
                columns["kind"].append(KIND_NAMES[r.kind])
            writer.write_table(pa.table(columns, schema=schema))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


ENCODERS: dict[str, Callable[[AsyncIterator[list[Row]]], AsyncIterator[bytes]]] = {
    "csv": csv_bytes,
    "parquet": parquet_bytes,
}


@dataclass(frozen=True, slots=True)
class Export:
    """A prepared export: what to read, and how to name and encode it."""

    device_id: uuid.UUID
    series: list[SeriesRef]
    start: int
    end: int
    format: ExportFormat

    @property
    def filename(self) -> str:
        """e.g. telemetry_<device>_20250101T000000Z_20250102T000000Z.csv"""

        def stamp(ts: int) -> str:
            return ms_to_iso(ts)[:19].replace("-", "").replace(":", "") + "Z"

        return f"telemetry_{self.device_id}_{stamp(self.start)}_{stamp(self.end)}.{self.format}"

    @property
    def media_type(self) -> str:
        """The Content-Type of the encoded file."""
        return MEDIA_TYPES[self.format]

    def body(
        self, database: Database, *, on_chunk: Callable[[list[Row]], None] | None = None
    ) -> AsyncIterator[bytes]:
        """The encoded file, piece by piece; `on_chunk` sees each chunk of rows (progress)."""

        async def rows() -> AsyncIterator[list[Row]]:
            async for chunk in iter_rows(database, self.series, self.start, self.end):
                if on_chunk is not None:
                    on_chunk(chunk)
                yield chunk

        return ENCODERS[self.format](rows())


async def prepare_export(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: uuid.UUID,
    keys: Sequence[str],
    start: str | None,
    end: str | None,
    fmt: ExportFormat,
) -> Export:
    """Check the request and the device of the caller's organization; nothing is read yet."""
    if fmt == "parquet":
        require_parquet()
    start_ms, end_ms = time_range(start, end)
    device = await get_device(session, principal, device_id)
    return await export_of(session, device, keys=keys, start_ms=start_ms, end_ms=end_ms, fmt=fmt)


async def export_of(
    session: AsyncSession,
    device: Device,
    *,
    keys: Sequence[str],
    start_ms: int,
    end_ms: int,
    fmt: ExportFormat,
) -> Export:
    """Describe the export of a device already checked (the CLI checks by id alone)."""
    series = await device_series(session, device.id, device.organization_id, keys)
    await session.close()  # the stream reads with connections of its own
    return Export(device.id, series, start_ms, end_ms, fmt)
