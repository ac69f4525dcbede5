"""Fuzzing the CSV imports: readings (telemetry/importing.py) and devices (devices/importing.py).

Whatever the file, an import ends in its documented refusal (Invalid, PayloadTooLarge) or a
report in which every data row is either a storable reading or a rejected line; nothing
else escapes, within a deadline. The steps are run as import_file runs them, without the
database: check_utf8, read_batches, to_readings (and parse_csv, _device_in for devices).
"""

from __future__ import annotations

import io
import json
import math
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from fleetcore.devices.importing import _device_in, _Profiles, parse_csv
from fleetcore.devices.models import DeviceProfile
from fleetcore.errors import Invalid, PayloadTooLarge
from fleetcore.telemetry.importing import check_utf8, read_batches, to_readings
from fleetcore.telemetry.query_schemas import ImportReport
from fleetcore_protocol.telemetry import Kind, Limits, Reading
from tests.support.fuzz_json import ODD_NUMBERS, deep, device_profiles, values, weighted
from tests.support.hypothesis_profiles import fuzz

NOW = 1_800_000_000_000
LIMITS = Limits()
PROFILE_ID = uuid.UUID(int=7)


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


odd_cells = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "1_000", "\uff11", "٣", " 1 ", "", " "]),
    st.sampled_from(["true", "FALSE", "1", "0", "yes", "=1+1", "@SUM(A1)", "-2", "+3"]),
    st.sampled_from(
        ['"', '""', 'a"b', "a\nb", "a\r\nb", "\x00", "\ufeff", "\ud800", "x" * 140_000]
    ),
    weighted(values, deep(), 4),
)
cells = weighted(st.text(max_size=30), odd_cells, 2)
# Mostly cells that pass, so that most rows reach the codec and the profile check.
good_times = st.one_of(
    st.integers(1_700_000_000_000, NOW).map(str),
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1)).map(
        datetime.isoformat
    ),
)
times = weighted(
    good_times,
    st.one_of(
        st.integers(0, 2_000_000_000_000).map(str),
        st.sampled_from(
            ["2024-02-30", "9999-12-31T23:59:59+23:59", "0001-01-01T00:00:00-23:59", "-1"]
        ),
        st.sampled_from(["2024-01-01T00:00:00 01:00", "1" * 16, "2024-01-01 00:00"]),
        cells,
    ),
    4,
)
good_values = st.one_of(
    st.floats(allow_nan=False).map(repr), st.text(max_size=30), st.sampled_from(["true", "0"])
)
csv_keys = weighted(st.from_regex(r"[A-Za-z0-9_.:/-]{1,20}", fullmatch=True), cells, 4)
kinds = weighted(
    st.just(""), st.sampled_from(["number", "string", "boolean", "json", "JSON ", "blob"]), 2
)
headers = weighted(
    st.sampled_from([["ts", "key", "value"], ["ts", "key", "value", "kind"]]),
    st.one_of(
        st.just(["ts_ms", "key", "value", "kind"]),
        st.permutations(["ts", "key", "value", "kind"]).map(list),
        st.lists(st.sampled_from(["ts", "ts_ms", "key", "value", "kind", "Key ", "x", ""])),
    ),
    3,
)


@st.composite
def reading_csv(draw: st.DrawFn) -> bytes:
    """A readings file: a header, rows of odd cells, any quoting and line ends, then bytes."""
    header = draw(headers)
    value = weighted(good_values, cells, 3)
    column = {"ts": times, "ts_ms": times, "key": csv_keys, "value": value, "kind": kinds}
    rows = [header]
    for _ in range(draw(st.integers(0, 8))):
        row = [draw(column.get(name.strip().lower(), cells)) for name in header]
        if draw(st.integers(0, 9)) == 0:  # a row with a field too many or too few
            row = row[:-1] if row and draw(st.booleans()) else [*row, draw(cells)]
        rows.append(row)
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    quote = draw(st.sampled_from([_quoted, lambda c: c]))
    text = end.join(",".join(quote(c) for c in row) for row in rows)
    data = text.encode("utf-8", "surrogatepass")
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data


def _refusal(step: Callable[[], Any]) -> Any:
    """What a step returned, or the documented refusal it raised (anything else fails)."""
    try:
        return step()
    except (Invalid, PayloadTooLarge) as exc:
        return exc


def _read_all(
    file: io.BytesIO, report: ImportReport, profile: DeviceProfile | None
) -> list[Reading]:
    readings: list[Reading] = []
    for batch in read_batches(file, report):
        readings += to_readings(batch, profile, report, now=NOW)
    return readings


def _import(data: bytes, profile: DeviceProfile | None) -> None:
    """The import's steps on one file; assert the report accounts for every row."""
    file = io.BytesIO(data)
    checked = _refusal(lambda: check_utf8(file))
    if isinstance(checked, Invalid):
        assert checked.code == "CSV_NOT_UTF8"
        return
    report = ImportReport()
    readings = _refusal(lambda: _read_all(file, report, profile))
    if isinstance(readings, Invalid):
        assert readings.code == "INVALID_CSV_HEADER"
        return
    assert report.rows == len(readings) + report.rejected_count
    for reading in readings:
        if reading.kind is Kind.NUMBER:
            assert math.isfinite(float(reading.value))  # type: ignore[arg-type]
        orjson.dumps(reading.value)  # what the writer stores
        assert LIMITS.min_ts <= reading.ts <= NOW + LIMITS.max_future_ms


@fuzz()
@given(data=st.binary(max_size=2_048), profile=device_profiles())
def test_reading_import_any_bytes(data: bytes, profile: DeviceProfile | None) -> None:
    _import(data, profile)


@fuzz()
@given(data=reading_csv())
@example(  # a JSON cell nested past orjson's 254 levels: TypeError from orjson.dumps
    data=b'ts,key,value,kind\n1700000000000,k,"' + b"[" * 300 + b"]" * 300 + b'",json\n'
)
def test_reading_import_odd_files(data: bytes) -> None:
    _import(data, None)


@fuzz()
@given(data=reading_csv(), profile=device_profiles())
def test_reading_import_odd_files_against_a_profile(data: bytes, profile: DeviceProfile) -> None:
    _import(data, profile)


# --- devices -----------------------------------------------------------------------------

device_headers = st.one_of(
    st.just(["name", "serial_number"]),
    st.just(["name", "serial_number", "profile", "labels", "latitude", "longitude"]),
    st.just(["name", "serial_number", "profile", "labels", "latitude", "longitude"]),
    st.permutations(["name", "serial_number", "profile", "labels", "latitude", "longitude"]).map(
        list
    ),
    st.lists(st.sampled_from(["name", "serial_number", "profile", "NAME", "x", ""]), max_size=5),
)
device_cells = {
    "latitude": st.one_of(st.sampled_from(["0", "90.0001", "-90", "nan", "1e999"]), cells),
    "longitude": st.one_of(st.sampled_from(["180", "-180.5", "inf", "-0"]), cells),
    "profile": st.one_of(
        st.sampled_from([str(PROFILE_ID), "Sensors", str(uuid.UUID(int=8))]), cells
    ),
    "labels": st.one_of(st.sampled_from([";", "a;b;a", ";" * 300, "x" * 200]), cells),
}


@st.composite
def device_csv(draw: st.DrawFn) -> bytes:
    """A devices file with odd cells, any quoting and line ends."""
    header = draw(device_headers)
    rows = [header] + [
        [draw(device_cells.get(name, cells)) for name in header]
        for _ in range(draw(st.integers(0, 6)))
    ]
    end = draw(st.sampled_from(["\n", "\r\n"]))
    quote = draw(st.sampled_from([_quoted, lambda c: c]))
    text = end.join(",".join(quote(c) for c in row) for row in rows)
    return text.encode("utf-8", "surrogatepass")


def _devices(data: bytes) -> None:
    rows = _refusal(lambda: parse_csv(data))
    if isinstance(rows, Invalid | PayloadTooLarge):
        assert rows.code in ("CSV_NOT_UTF8", "INVALID_CSV", "CSV_EMPTY", "INVALID_CSV_HEADER")
        return
    profiles = _Profiles([(PROFILE_ID, "Sensors")])
    for row in rows:
        device: Any = _device_in(row, profiles)
        if device is None:
            assert row.errors
        else:
            assert not row.errors
            json.dumps(device.model_dump(mode="json"))


@fuzz()
@given(data=st.binary(max_size=2_048))
def test_device_import_any_bytes(data: bytes) -> None:
    _devices(data)


@fuzz()
@given(data=device_csv())
def test_device_import_odd_files(data: bytes) -> None:
    _devices(data)
