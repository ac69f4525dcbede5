"""Restoring an archived day through the telemetry writer, checked whole before anything is written.

Every file the manifest names is read and checked first (sha256, Parquet footer, columns,
row count), and every device in it must still exist in the organization: bad input is an
error that changes nothing. Then the readings go through the same writer as live data
(de-duplicated, so restoring twice stores nothing the second time), and the day's roll-ups
of the restored numeric series are rebuilt from what is then stored: the raw readings may
have been deleted while their roll-ups were kept, and adding the restored readings to those
would count them twice.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson
from sqlalchemy import select, update

from fleetcore.archive import layout
from fleetcore.archive.layout import FileEntry, Manifest
from fleetcore.archive.models import TelemetryArchive
from fleetcore.archive.reading import day_bounds, org_series
from fleetcore.archive.rollups import rebuild_rollups
from fleetcore.archive.store import read_all
from fleetcore.db import Database
from fleetcore.devices.models import Device
from fleetcore.errors import Invalid, NotFound
from fleetcore.media.store import MediaStore
from fleetcore.telemetry.export import require_parquet
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore_protocol.telemetry import Kind, Reading

BATCH_READINGS = 5_000
Submit = Callable[[list[DeviceReadings]], Awaitable[tuple[int, int]]]


@dataclass(slots=True)
class RestoreReport:
    """What a restore read and stored."""

    rows: int = 0  # readings read from the archive (of the device, with --device)
    stored: int = 0
    duplicates: int = 0
    devices: set[uuid.UUID] = field(default_factory=set)


def _damaged(what: str, why: str) -> Invalid:
    return Invalid(
        f"the archive file {what} is damaged: {why}",
        code="ARCHIVE_DAMAGED",
        details={"file": what},
    )


async def load_manifest(
    database: Database, store: MediaStore, org_id: uuid.UUID, day: date
) -> tuple[TelemetryArchive, Manifest]:
    """The day's record and its manifest, checked against the record's sha256."""
    async with database.session() as session:
        record = await session.scalar(
            select(TelemetryArchive).where(
                TelemetryArchive.organization_id == org_id, TelemetryArchive.day == day
            )
        )
    if record is None or not record.manifest_sha256:
        raise NotFound(
            f"no archive of organization {org_id} on {day.isoformat()}",
            code="ARCHIVE_NOT_FOUND",
            details={"organization_id": str(org_id), "day": day.isoformat()},
        )
    where = f"{record.location}/{layout.MANIFEST}"
    try:
        data = await read_all(store, where)
    except KeyError:
        raise Invalid(
            f"the archive manifest {where} is missing from the {store.name} store",
            code="ARCHIVE_DAMAGED",
            details={"manifest": where},
        ) from None
    if hashlib.sha256(data).hexdigest() != record.manifest_sha256:
        raise Invalid(
            f"the archive manifest {where} is damaged: it is not the one recorded",
            code="ARCHIVE_DAMAGED",
            details={"manifest": where},
        )
    return record, layout.parse_manifest(data, where=where, org_id=org_id, day=day)


async def _checked_file(store: MediaStore, prefix: str, entry: FileEntry) -> Any:
    """The file as a pyarrow ParquetFile, after its sha256, columns and row count check out."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    key = f"{prefix}/{entry.path}"
    try:
        data = await read_all(store, key)
    except KeyError:
        raise _damaged(key, "it is missing") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise _damaged(key, "its sha256 differs from the manifest's")
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises several types for a bad footer
        raise _damaged(key, f"not a Parquet file ({exc})") from None
    if parquet.schema_arrow.names != list(layout.COLUMNS):
        raise _damaged(key, f"unexpected columns {parquet.schema_arrow.names}")
    if parquet.metadata.num_rows != entry.rows:
        raise _damaged(key, f"{parquet.metadata.num_rows} rows, the manifest says {entry.rows}")
    return parquet


def _readings(batch: Any, device: str | None) -> Iterator[tuple[str, Reading]]:
    """(device id, reading) of each row of a record batch (of one device, when given)."""
    columns = {name: batch.column(name).to_pylist() for name in layout.COLUMNS}
    ts_ms = batch.column("ts").cast("int64").to_pylist()
    for i, device_id in enumerate(columns["device_id"]):
        if device is not None and device_id != device:
            continue
        kind = layout.KINDS[columns["kind"][i]]
        if kind is Kind.NUMBER:
            value: Any = columns["number"][i]
        elif kind is Kind.TEXT:
            value = columns["text"][i]
        elif kind is Kind.BOOLEAN:
            value = columns["boolean"][i]
        else:
            value = orjson.loads(columns["json"][i])
        yield device_id, Reading(columns["key"][i], ts_ms[i], kind, value)


async def _check_devices(database: Database, org_id: uuid.UUID, devices: set[str]) -> None:
    """NotFound naming the archive's devices that no longer exist in the organization."""
    wanted = {uuid.UUID(d) for d in devices}
    async with database.session() as session:
        found = set(
            (
                await session.scalars(
                    select(Device.id).where(
                        Device.organization_id == org_id, Device.id.in_(list(wanted))
                    )
                )
            ).all()
        )
    if missing := sorted(str(d) for d in wanted - found):
        raise NotFound(
            f"the archive holds readings of devices that no longer exist: {missing[:5]}; "
            "restore the others one by one with --device",
            code="ARCHIVE_DEVICE_GONE",
            details={"devices": missing[:20]},
        )


async def restore_day(
    database: Database,
    store: MediaStore,
    *,
    org_id: uuid.UUID,
    day: date,
    submit: Submit,
    device_id: uuid.UUID | None = None,
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Restore one archived day (of one device); see the module docstring."""
    require_parquet()
    record, manifest = await load_manifest(database, store, org_id, day)
    device = str(device_id) if device_id is not None else None
    devices: set[str] = set()
    for entry in manifest.files:  # the check pass: nothing is written unless all is well
        parquet = await _checked_file(store, record.location, entry)
        column = parquet.read(columns=["device_id"]).column("device_id").unique().to_pylist()
        devices.update(d for d in column if device is None or d == device)
    if device_id is not None:
        await _check_devices(database, org_id, {device})  # type: ignore[arg-type]
    await _check_devices(database, org_id, devices)
    report = RestoreReport(devices={uuid.UUID(d) for d in devices})
    for entry in manifest.files:
        parquet = await _checked_file(store, record.location, entry)
        for batch in parquet.iter_batches(batch_size=BATCH_READINGS):
            grouped: dict[str, list[Reading]] = {}
            for dev, reading in _readings(batch, device):
                grouped.setdefault(dev, []).append(reading)
            if not grouped:
                continue
            items = [DeviceReadings(uuid.UUID(d), org_id, r, "restore") for d, r in grouped.items()]
            stored, duplicates = await submit(items)
            report.rows += sum(len(r) for r in grouped.values())
            report.stored += stored
            report.duplicates += duplicates
            if progress is not None:
                progress(report.rows)
    start, end = day_bounds(day)
    for restored in report.devices:
        series = (await org_series(database, org_id, restored)).get(restored, [])
        await rebuild_rollups(database, [s for s in series if s.kind is Kind.NUMBER], start, end)
    if device_id is None:
        # The day's raw readings are all back: retention judges it again (and may purge it
        # again). After one device's restore the day stays purged: recounted, it would look
        # stale, and archiving it again would drop the other devices' readings.
        async with database.session(write=True) as session:
            await session.execute(
                update(TelemetryArchive)
                .where(TelemetryArchive.id == record.id)
                .values(purged_at=None)
            )
            await session.commit()
    return report
