"""What an archive looks like in the store: Hive-style keys, the Parquet schema, the manifest.

    org=<uuid>/day=YYYY-MM-DD/part-0000.parquet   readings of that organization and UTC day
    org=<uuid>/day=YYYY-MM-DD/_manifest.json      files, row counts, min/max ts, sha256

DuckDB, pandas (pyarrow) and Spark read the tree directly with Hive partitioning (org and
day become columns); they skip names starting with "_", so the manifest and the staging
area (`_staging/`) are never read as data. The manifest is written last: it is the commit,
and restore trusts only files it names, with their sha256.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import orjson

from fleetcore.errors import Invalid
from fleetcore_protocol.telemetry import Kind

SCHEMA_VERSION = 1
MANIFEST = "_manifest.json"
STAGING = "_staging"
# Parquet columns: exactly one of the value columns is set on a row, by its kind.
COLUMNS = ("device_id", "key", "kind", "ts", "number", "text", "boolean", "json")
KIND_NAMES = {
    Kind.NUMBER: "number",
    Kind.TEXT: "string",
    Kind.BOOLEAN: "boolean",
    Kind.JSON: "json",
}
KINDS = {name: kind for kind, name in KIND_NAMES.items()}


def day_prefix(org_id: uuid.UUID, day: date) -> str:
    """`org=<uuid>/day=YYYY-MM-DD`."""
    return f"org={org_id}/day={day.isoformat()}"


def part_name(index: int) -> str:
    """`part-0000.parquet`."""
    return f"part-{index:04d}.parquet"


def arrow_schema() -> Any:
    """The archive's Arrow schema (ts as UTC milliseconds)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    return pa.schema(
        [
            ("device_id", pa.string()),
            ("key", pa.string()),
            ("kind", pa.string()),
            ("ts", pa.timestamp("ms", tz="UTC")),
            ("number", pa.float64()),
            ("text", pa.string()),
            ("boolean", pa.bool_()),
            ("json", pa.string()),
        ]
    )


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One Parquet file of a day."""

    path: str  # relative to the day's prefix
    rows: int
    bytes: int
    sha256: str
    min_ts: int | None
    max_ts: int | None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a day's archive holds; written last, read first."""

    schema_version: int
    organization_id: str
    day: str
    created_at: str
    rows: int
    min_ts: int | None
    max_ts: int | None
    columns: list[str]
    files: list[FileEntry]

    def encode(self) -> bytes:
        """Indented JSON (people read it too)."""
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


def _damaged(where: str, why: str) -> Invalid:
    return Invalid(
        f"the archive manifest {where} is damaged: {why}",
        code="ARCHIVE_DAMAGED",
        details={"manifest": where},
    )


def parse_manifest(data: bytes, *, where: str, org_id: uuid.UUID, day: date) -> Manifest:
    """The manifest, checked for shape and for naming this organization and day."""
    try:
        raw = orjson.loads(data)
        files = [FileEntry(**entry) for entry in raw.pop("files")]
        manifest = Manifest(**raw, files=files)
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise _damaged(where, f"not a manifest ({exc})") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise _damaged(where, f"schema version {manifest.schema_version} is not {SCHEMA_VERSION}")
    if manifest.organization_id != str(org_id) or manifest.day != day.isoformat():
        raise _damaged(where, "it names another organization or day")
    if sum(f.rows for f in manifest.files) != manifest.rows:
        raise _damaged(where, "its files' row counts do not add up to its total")
    for entry in manifest.files:
        if (
            not isinstance(entry.path, str)
            or "/" in entry.path
            or not entry.path.endswith(".parquet")
        ):
            raise _damaged(where, f"a file name is not a part of the day: {entry.path!r}")
    return manifest
