"""Importing historical readings from CSV, through the same pipeline (or writer) as live data.

Columns: ts (ISO 8601 or epoch ms; an export's ts_ms also works), key, value, and optionally
kind (number, string, boolean, json; inferred when absent or empty). The file is checked to
be UTF-8 first, so nothing is stored from a file that is not text; then it is parsed a batch
at a time and every row is checked by the telemetry codec and the device profile exactly as
a live reading is. Bad rows are reported by line; the good ones are stored, de-duplicated.
A key or string cell escaped by an export (csv_cells: a quote before = + - @ ...) is read
without that quote, so an export imports as exactly what was stored.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Generator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.csv_cells import unescape_cell
from fleetcore.devices.models import DeviceProfile
from fleetcore.devices.service import get_device
from fleetcore.errors import Invalid
from fleetcore.telemetry.ingest import Checked, check_against_profile
from fleetcore.telemetry.pipeline import IngestPipeline, Overloaded
from fleetcore.telemetry.query_schemas import ImportAnswer, ImportReport, now_ms, parse_time
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore_protocol.jsonvalue import unstorable
from fleetcore_protocol.telemetry import Limits, Reading, decode_telemetry

BATCH_ROWS = 5_000
COLUMNS = ("ts", "ts_ms", "key", "value", "kind")
OVERLOADED_PATIENCE_S = 30.0
# The live limits, except the payload-wide ones (a batch here is not one device payload).
_LIMITS = Limits(max_bytes=1 << 40, max_readings=BATCH_ROWS)
_NUMBER = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_BOOLEANS = ("true", "false", "1", "0")  # 1 and 0 only with kind boolean

Submit = Callable[[DeviceReadings], Awaitable[tuple[int, int]]]


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    ts: int
    key: str
    value: Any


def check_utf8(file: BinaryIO) -> None:
    """Invalid unless the whole file is UTF-8 text; rewinds it."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        while chunk := file.read(1 << 20):
            decoder.decode(chunk)
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise Invalid(
            f"the file is not UTF-8 text (invalid byte near offset {offset}); save it as CSV UTF-8",
            code="CSV_NOT_UTF8",
            details={"field": "file"},
        ) from None
    file.seek(0)


def typed_value(text: str, kind: str) -> Any:
    """A value cell as a typed value, by the kind column or inferred; ValueError says why not."""
    stripped = text.strip()
    if kind not in ("", "number", "string", "boolean", "json"):
        raise ValueError("kind must be number, string, boolean or json")
    if kind == "string":
        return unescape_cell(text)
    if not stripped:
        raise ValueError("the value is empty")
    if kind in ("", "number") and _NUMBER.match(stripped):
        number = float(stripped)
        if not math.isfinite(number):
            raise ValueError("the number is out of range")
        return number
    if kind in ("", "boolean") and stripped.lower() in _BOOLEANS[: 4 if kind else 2]:
        return stripped.lower() in ("true", "1")
    if kind in ("", "json") and stripped[:1] in ("{", "["):
        if "\\u0000" in stripped:
            raise ValueError("JSON holding a NUL character cannot be stored")
        try:
            parsed = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict | list):
            # Deeper than the writer's orjson can encode would fail the batch, not the line.
            if problem := unstorable(parsed):
                raise ValueError(problem)
            return parsed
    if kind == "":
        return unescape_cell(text)
    raise ValueError(f"the value is not a {kind if kind != 'json' else 'JSON object or array'}")


def _line(number: int, record: list[str], columns: list[str]) -> _Line | str:
    """A data row as a line to store, or why not."""
    if len(record) != len(columns):
        return f"{len(record)} fields, but the header has {len(columns)}"
    if any("\x00" in cell for cell in record):
        return "the line holds a NUL character"
    cells = dict(zip(columns, record, strict=True))
    ts_text = cells.get("ts", "").strip() or cells.get("ts_ms", "").strip()
    try:
        ts = parse_time(ts_text, field="ts") if ts_text else None
    except Invalid:
        ts = None
    if ts is None:
        return "ts must be an ISO 8601 time or epoch milliseconds"
    try:
        value = typed_value(cells["value"], cells.get("kind", "").strip().lower())
    except ValueError as exc:
        return str(exc)
    return _Line(number, ts, unescape_cell(cells["key"].strip()), value)


def _columns(reader: Any) -> list[str]:
    """The header's column names; Invalid unless it names ts (or ts_ms), key and value."""
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    columns = [cell.strip().lower() for cell in header or []]
    missing = [c for c in ("key", "value") if c not in columns]
    if "ts" not in columns and "ts_ms" not in columns:
        missing.insert(0, "ts")
    unknown = [c for c in columns if c not in COLUMNS]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if missing or unknown or repeated:
        raise Invalid(
            "the first line must be a header naming the columns ts,key,value[,kind] "
            f"(missing: {missing}, unknown: {unknown[:10]}, repeated: {repeated})",
            code="INVALID_CSV_HEADER",
            details={"field": "file", "missing": missing, "unknown": unknown[:10]},
        )
    return columns


def read_batches(file: BinaryIO, report: ImportReport) -> Generator[list[_Line], None, None]:
    """Lines fit to check, BATCH_ROWS at a time; unusable rows go to the report."""
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        reader = csv.reader(text, strict=True)
        columns = _columns(reader)
        batch: list[_Line] = []
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                report.rows += 1
                report.reject(reader.line_num, f"not valid CSV: {exc}")
                continue
            if not any(cell.strip() for cell in record):
                continue
            report.rows += 1
            line = _line(reader.line_num, record, columns)
            if isinstance(line, str):
                report.reject(reader.line_num, line)
                continue
            batch.append(line)
            if len(batch) >= BATCH_ROWS:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        text.detach()


def to_readings(
    batch: list[_Line], profile: DeviceProfile | None, report: ImportReport, *, now: int
) -> list[Reading]:
    """The lines that pass the live rules (codec, then profile) as readings."""
    items = [{"ts": line.ts, "values": {line.key: line.value}} for line in batch]
    decoded = decode_telemetry(orjson.dumps(items), now_ms=now, limits=_LIMITS, loads=orjson.loads)
    problems = {p.item: p.message for p in decoded.problems if p.item is not None}
    good = [line for index, line in enumerate(batch) if index not in problems]
    for index, message in sorted(problems.items()):
        report.reject(batch[index].number, message)
    if profile is None or not profile.telemetry_keys:
        return decoded.readings
    readings: list[Reading] = []
    for line, reading in zip(good, decoded.readings, strict=True):
        checked = Checked()
        check_against_profile([reading], profile, checked)
        if checked.problems:
            report.reject(line.number, checked.problems[0].message)
        readings.extend(checked.readings)
    return readings


async def import_file(
    file: BinaryIO,
    *,
    device_id: uuid.UUID,
    organization_id: uuid.UUID,
    profile: DeviceProfile | None,
    submit: Submit,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Check, parse and store a CSV file of readings; `progress` sees the bytes read."""
    report = ImportReport()
    await asyncio.to_thread(check_utf8, file)
    batches = read_batches(file, report)
    try:
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            readings = to_readings(batch, profile, report, now=now_ms())
            if readings:
                stored, duplicates = await submit(
                    DeviceReadings(device_id, organization_id, readings, "import")
                )
                report.stored += stored
                report.duplicates += duplicates
            if progress is not None:
                progress(file.tell())
    finally:
        batches.close()
    return report


def pipeline_submit(pipeline: IngestPipeline) -> Submit:
    """Submit through the live pipeline, waiting out short overloads."""

    async def submit(item: DeviceReadings) -> tuple[int, int]:
        deadline = time.monotonic() + OVERLOADED_PATIENCE_S
        delay = 0.05
        while True:
            try:
                outcome = await pipeline.submit(item)
            except Overloaded:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            return outcome.stored, outcome.duplicates

    return submit


async def import_upload(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: uuid.UUID,
    upload: Callable[[], AbstractAsyncContextManager[BinaryIO]],
    pipeline: IngestPipeline,
) -> ImportAnswer:
    """Managers: import a CSV of readings into a device of the caller's organization."""
    principal.require(Role.MANAGER)
    device = await get_device(session, principal, device_id)
    profile = await session.get(DeviceProfile, device.profile_id) if device.profile_id else None
    device_id, org_id = device.id, device.organization_id
    await session.close()  # release the connection while the file is read and written
    async with upload() as file:
        report = await import_file(
            file,
            device_id=device_id,
            organization_id=org_id,
            profile=profile,
            submit=pipeline_submit(pipeline),
        )
    audit.record(
        session,
        action="telemetry.import",
        actor=principal,
        organization_id=org_id,
        target_type="device",
        target_id=device_id,
        details={
            "rows": report.rows,
            "stored": report.stored,
            "duplicates": report.duplicates,
            "rejected": report.rejected_count,
        },
    )
    await session.commit()
    return report.answer()
