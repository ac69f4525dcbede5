"""Writing one organization-day as Parquet: stage, verify, swap, then commit the manifest.

1. The archive record is claimed: created (stale) the first time, or marked stale by a
   compare-and-set that fails when retention has purged the day's raw readings (their only
   copy is the archive: re-archiving would replace it with nothing).
2. Parts are written under `_staging/<token>/` (readers skip "_" names), each an atomic put.
3. The old manifest is deleted, the parts moved into the day's prefix, parts of the old
   archive that the new one does not reuse deleted, and the new manifest put: the commit.
   A crash before that leaves no manifest, never one naming a partial or missing file; a
   stale record makes the job archive the day again.
4. The record is filled in and un-staled.

Memory holds one part being built (archive_rows_per_file readings at most).
"""

from __future__ import annotations

import hashlib
import io
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from fleetcore.archive import layout
from fleetcore.archive.layout import FileEntry, Manifest
from fleetcore.archive.models import TelemetryArchive
from fleetcore.archive.reading import day_rows
from fleetcore.archive.store import move
from fleetcore.db import Database, utcnow
from fleetcore.errors import Conflict
from fleetcore.media.store import MediaStore
from fleetcore.telemetry.export import require_parquet
from fleetcore.telemetry.queries import Row
from fleetcore_protocol.telemetry import Kind

log = structlog.get_logger(__name__)

ROW_GROUP_ROWS = 100_000  # larger groups compress better; DuckDB reads them in parallel


@dataclass(slots=True)
class ArchiveResult:
    """What archiving one day wrote."""

    org_id: uuid.UUID
    day: date
    rows: int = 0
    bytes: int = 0
    files: list[FileEntry] = field(default_factory=list)
    location: str = ""


class _PartBuilder:
    """One Parquet file in memory, fed column lists a row group at a time."""

    def __init__(self) -> None:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self.schema = layout.arrow_schema()
        self.buffer = io.BytesIO()
        self.writer = pq.ParquetWriter(self.buffer, self.schema, compression="zstd")
        self.rows = 0
        self.min_ts: int | None = None
        self.max_ts: int | None = None
        self._columns: dict[str, list[Any]] = {name: [] for name in layout.COLUMNS}

    def add(self, device_id: uuid.UUID, rows: list[Row]) -> None:
        device = str(device_id)
        c = self._columns
        for r in rows:
            c["device_id"].append(device)
            c["key"].append(r.key)
            c["kind"].append(layout.KIND_NAMES[r.kind])
            c["ts"].append(r.ts)
            kind = r.kind
            c["number"].append(r.value if kind is Kind.NUMBER else None)
            c["text"].append(r.value if kind is Kind.TEXT else None)
            c["boolean"].append(r.value if kind is Kind.BOOLEAN else None)
            c["json"].append(orjson.dumps(r.value).decode() if kind is Kind.JSON else None)
        if rows:
            low, high = min(r.ts for r in rows), max(r.ts for r in rows)
            self.min_ts = low if self.min_ts is None else min(self.min_ts, low)
            self.max_ts = high if self.max_ts is None else max(self.max_ts, high)
        self.rows += len(rows)
        if len(c["ts"]) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._columns["ts"]:
            self.writer.write_table(pa.table(self._columns, schema=self.schema))
            self._columns = {name: [] for name in layout.COLUMNS}

    def finish(self, path: str) -> tuple[FileEntry, bytes]:
        self._flush()
        self.writer.close()
        data = self.buffer.getvalue()
        entry = FileEntry(
            path=path,
            rows=self.rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            min_ts=self.min_ts,
            max_ts=self.max_ts,
        )
        return entry, data


async def _claim(database: Database, org_id: uuid.UUID, day: date, location: str) -> None:
    """Mark the day's record stale (creating it), or Conflict when its raw data is purged."""
    async with database.session(write=True) as session:
        exists = await session.scalar(
            select(TelemetryArchive.id).where(
                TelemetryArchive.organization_id == org_id, TelemetryArchive.day == day
            )
        )
        if exists is None:
            session.add(
                TelemetryArchive(
                    organization_id=org_id,
                    day=day,
                    rows=0,
                    files=0,
                    bytes=0,
                    store="",
                    location=location,
                    manifest_sha256="",
                    stale_at=utcnow(),
                )
            )
            try:
                await session.commit()
                return
            except IntegrityError:  # created meanwhile by another archiver: claim it below
                await session.rollback()
        claimed = await session.execute(
            update(TelemetryArchive)
            .where(
                TelemetryArchive.organization_id == org_id,
                TelemetryArchive.day == day,
                TelemetryArchive.purged_at.is_(None),
            )
            .values(stale_at=utcnow())
        )
        await session.commit()
    if not claimed.rowcount:  # type: ignore[attr-defined]
        raise Conflict(
            f"{day.isoformat()} of organization {org_id} was archived and its raw readings "
            "deleted: the archive is their only copy. Restore it first "
            "(fleetcore archive restore), then archive it again.",
            code="ARCHIVE_PURGED",
            details={"organization_id": str(org_id), "day": day.isoformat()},
        )


async def _stage(
    database: Database,
    store: MediaStore,
    org_id: uuid.UUID,
    day: date,
    *,
    staging: str,
    rows_per_file: int,
) -> list[FileEntry]:
    """Write the day's parts under the staging prefix; their entries."""
    entries: list[FileEntry] = []
    part: _PartBuilder | None = None

    async def put(builder: _PartBuilder) -> None:
        entry, data = builder.finish(layout.part_name(len(entries)))
        await store.put(f"{staging}/{entry.path}", data)
        entries.append(entry)

    async for device_id, chunk in day_rows(database, org_id, day):
        while chunk:
            part = part or _PartBuilder()
            room = rows_per_file - part.rows
            part.add(device_id, chunk[:room])
            chunk = chunk[room:]
            if part.rows >= rows_per_file:
                await put(part)
                part = None
    if part is not None:
        await put(part)
    return entries


async def _swap(
    store: MediaStore, prefix: str, staging: str, entries: list[FileEntry], manifest: bytes
) -> None:
    """Replace the day's files with the staged ones; the manifest goes in last."""
    await store.delete(f"{prefix}/{layout.MANIFEST}")
    for entry in entries:
        await move(store, f"{staging}/{entry.path}", f"{prefix}/{entry.path}")
    keep = {entry.path for entry in entries}
    async for key, _ in store.keys(prefix + "/"):
        if key.rsplit("/", 1)[-1] not in keep:
            await store.delete(key)  # the old archive's extra parts
    await store.put(f"{prefix}/{layout.MANIFEST}", manifest)


async def archive_day(
    database: Database,
    store: MediaStore,
    *,
    org_id: uuid.UUID,
    day: date,
    rows_per_file: int = 1_000_000,
) -> ArchiveResult:
    """Archive (or archive again) one organization-day; see the module docstring."""
    require_parquet()
    prefix = layout.day_prefix(org_id, day)
    await _claim(database, org_id, day, prefix)
    staging = f"{layout.STAGING}/{secrets.token_hex(8)}"
    try:
        entries = await _stage(
            database, store, org_id, day, staging=staging, rows_per_file=rows_per_file
        )
        manifest = Manifest(
            schema_version=layout.SCHEMA_VERSION,
            organization_id=str(org_id),
            day=day.isoformat(),
            created_at=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            rows=sum(e.rows for e in entries),
            min_ts=min((e.min_ts for e in entries if e.min_ts is not None), default=None),
            max_ts=max((e.max_ts for e in entries if e.max_ts is not None), default=None),
            columns=list(layout.COLUMNS),
            files=entries,
        )
        encoded = manifest.encode()
        await _swap(store, prefix, staging, entries, encoded)
    finally:
        async for key, _ in store.keys(staging + "/"):
            await store.delete(key)  # what a failure left staged
    async with database.session(write=True) as session:
        await session.execute(
            update(TelemetryArchive)
            .where(TelemetryArchive.organization_id == org_id, TelemetryArchive.day == day)
            .values(
                rows=manifest.rows,
                files=len(entries),
                bytes=sum(e.bytes for e in entries),
                min_ts=manifest.min_ts,
                max_ts=manifest.max_ts,
                store=store.name,
                location=prefix,
                manifest_sha256=hashlib.sha256(encoded).hexdigest(),
                created_at=utcnow(),
                stale_at=None,
            )
        )
        await session.commit()
    log.info("archive_written", org=str(org_id), day=day.isoformat(), rows=manifest.rows)
    return ArchiveResult(org_id, day, manifest.rows, sum(e.bytes for e in entries), entries, prefix)
