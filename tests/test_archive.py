"""Archives on SQLite and PostgreSQL: Parquet read back with pyarrow, retention that waits for
an archive, restore through the writer (exact round trip, roll-ups right), bad input."""

from __future__ import annotations

import hashlib
import subprocess
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from fleetcore.archive import layout
from fleetcore.archive.gate import archived_days
from fleetcore.archive.models import TelemetryArchive
from fleetcore.archive.reading import count_day, day_bounds, org_series
from fleetcore.archive.restore import restore_day
from fleetcore.archive.service import run_archive
from fleetcore.archive.writer import archive_day
from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.devices.service import new_device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.media.store import FilesystemStore, MediaStore, S3Store
from fleetcore.telemetry.export import iter_rows
from fleetcore.telemetry.models import ROLLUPS, Retention
from fleetcore.telemetry.partitions import DAY_MS, day_of, day_start_ms
from fleetcore.telemetry.retention import Policy, run_retention
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.conftest import make_settings
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.test_media_store import BUCKET, s3_endpoint  # noqa: F401 (a fixture)

DEFAULTS = Policy(90, 365, 0)
GATED = Policy(3, 365, 0, requires_archive=True)


def _now() -> int:
    return int(time.time() * 1000)


def _old_day(days_ago: int = 10) -> date:
    return day_of(_now()) - timedelta(days=days_ago)


async def _org(db: Database, policy: Policy | None = None) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """An organization (with `policy`) and two devices."""
    slug = f"org-{uuid.uuid4().hex[:8]}"
    async with db.session() as session:
        org = await users.create_organization(
            session, None, data=OrganizationIn(name=slug, slug=slug)
        )
        devices = [new_device(org.id, name=f"d{i}", serial_number=f"{slug}-{i}")[0] for i in (1, 2)]
        session.add_all(devices)
        if policy is not None:
            session.add(
                Retention(
                    organization_id=org.id,
                    raw_days=policy.raw_days,
                    rollup_1m_days=policy.rollup_1m_days,
                    rollup_1h_days=policy.rollup_1h_days,
                    requires_archive=policy.requires_archive,
                )
            )
        await session.commit()
        return org.id, [d.id for d in devices]


def _readings(day: date, count: int, *, offset: int = 0) -> list[Reading]:
    """`count` readings of every kind spread over the day (numbers every 30 s)."""
    start = day_start_ms(day)
    out: list[Reading] = []
    for i in range(count):
        ts = start + offset + i * 30_000
        out.append(Reading("temp", ts, Kind.NUMBER, 20.0 + (i % 97) / 4))
        if i % 10 == 0:
            out.append(Reading("state", ts, Kind.TEXT, f"state {i} é"))
            out.append(Reading("open", ts, Kind.BOOLEAN, i % 20 == 0))
            out.append(Reading("meta", ts, Kind.JSON, {"i": i, "tags": ["a", i / 3]}))
    return out


async def _write(
    db: Database, org_id: uuid.UUID, device_id: uuid.UUID, readings: list[Reading]
) -> None:
    writer = TelemetryWriter(db.engine)
    for first in range(0, len(readings), 5_000):
        await writer.write([DeviceReadings(device_id, org_id, readings[first : first + 5_000])])


async def _snapshot(db: Database, org_id: uuid.UUID, day: date) -> list[tuple[Any, ...]]:
    """Every reading of the organization on the day, as (device, ts, key, kind, value)."""
    start, end = day_bounds(day)
    out: list[tuple[Any, ...]] = []
    for device_id, series in (await org_series(db, org_id)).items():
        async for chunk in iter_rows(db, series, start, end):
            out.extend((str(device_id), r.ts, r.key, int(r.kind), r.value) for r in chunk)
    return sorted(out, key=lambda row: row[:4])


async def _rollups(db: Database, org_id: uuid.UUID, day: date) -> dict[str, list[tuple[Any, ...]]]:
    start, end = day_bounds(day)
    ids = [s.id for refs in (await org_series(db, org_id)).values() for s in refs]
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.connect() as connection:
        for table in ROLLUPS.values():
            query = (
                select(table)
                .where(table.c.series_id.in_(ids), table.c.bucket >= start, table.c.bucket < end)
                .order_by(table.c.series_id, table.c.bucket)
            )
            out[table.name] = [tuple(row) for row in (await connection.execute(query)).all()]
    return out


def _same_rollups(a: dict[str, list[tuple[Any, ...]]], b: dict[str, list[tuple[Any, ...]]]) -> None:
    for name in a:
        assert len(a[name]) == len(b[name]) > 0, name
        for left, right in zip(a[name], b[name], strict=True):
            # (series, bucket, cnt, total, vmin, vmax, first_ts, vfirst, last_ts, vlast); the
            # total is a float sum, added in another order by the rebuild.
            assert left[:3] + left[4:] == right[:3] + right[4:], name
            assert left[3] == pytest.approx(right[3], rel=1e-12), name


def run_cli(database: Database, *args: Any) -> subprocess.CompletedProcess[str]:
    """`fleetcore ARGS` on the test's database; a trailing dict adds to the environment."""
    env = fleetcore_env()
    env["FLEETCORE_DATABASE_URL"] = database.engine.url.render_as_string(hide_password=False)
    if args and isinstance(args[-1], dict):
        env.update(args[-1])
        args = args[:-1]
    return forkserver.run(
        [FLEETCORE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def _store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "archive")


async def _submit(db: Database) -> Any:
    writer = TelemetryWriter(db.engine)

    async def submit(items: list[DeviceReadings]) -> tuple[int, int]:
        result = await writer.write(items)
        return len(result.stored), result.duplicates

    return submit


async def test_archive_reads_back_with_pyarrow(live_database: Database, tmp_path: Path) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db)
    day = _old_day()
    for n, device_id in enumerate(devices):
        await _write(db, org_id, device_id, _readings(day, 1_500, offset=n))
    await _write(db, org_id, devices[0], _readings(day + timedelta(days=1), 10))  # not archived
    expected = await _snapshot(db, org_id, day)

    result = await archive_day(db, store, org_id=org_id, day=day, rows_per_file=1_000)

    assert result.rows == len(expected) == 2 * (1_500 + 3 * 150)
    assert len(result.files) == 4  # 1,000 readings a file at most
    dataset = ds.dataset(store.root, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == len(expected)
    assert set(table.column("org").to_pylist()) == {str(org_id)}
    assert {str(d) for d in table.column("day").to_pylist()} == {day.isoformat()}
    rows = table.to_pylist()
    got = []
    for row in rows:
        kind = layout.KINDS[row["kind"]]
        value = {
            Kind.NUMBER: row["number"],
            Kind.TEXT: row["text"],
            Kind.BOOLEAN: row["boolean"],
            Kind.JSON: orjson.loads(row["json"]) if row["json"] is not None else None,
        }[kind]
        ts = int(row["ts"].timestamp() * 1000)
        got.append((row["device_id"], ts, row["key"], int(kind), value))
    assert sorted(got, key=lambda r: r[:4]) == expected
    assert str(table.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    # The manifest: files, counts, sha256, min/max; the record says the same.
    prefix = store.root / f"org={org_id}" / f"day={day.isoformat()}"
    manifest = orjson.loads((prefix / layout.MANIFEST).read_bytes())
    assert manifest["schema_version"] == layout.SCHEMA_VERSION
    assert manifest["rows"] == len(expected)
    assert manifest["min_ts"] == min(r[1] for r in expected)
    assert manifest["max_ts"] == max(r[1] for r in expected)
    for entry in manifest["files"]:
        data = (prefix / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert pq.ParquetFile(prefix / entry["path"]).metadata.num_rows == entry["rows"]
    assert sorted(p.name for p in prefix.iterdir()) == [
        layout.MANIFEST,
        *(layout.part_name(i) for i in range(4)),
    ]
    assert not list((store.root / layout.STAGING).rglob("*.parquet"))
    async with db.session() as session:
        record = await session.scalar(
            select(TelemetryArchive).where(TelemetryArchive.organization_id == org_id)
        )
    assert record is not None
    assert (record.rows, record.files, record.stale_at, record.purged_at) == (
        len(expected),
        4,
        None,
        None,
    )
    # Archiving again replaces the day: one bigger part now, the old extra parts gone.
    again = await archive_day(db, store, org_id=org_id, day=day)
    assert len(again.files) == 1
    assert sorted(p.name for p in prefix.iterdir()) == [layout.MANIFEST, layout.part_name(0)]
    assert ds.dataset(store.root, format="parquet", partitioning="hive").count_rows() == len(
        expected
    )


async def test_archive_delete_restore_round_trip(live_database: Database, tmp_path: Path) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day, recent = _old_day(10), _old_day(1)
    for device_id in devices:
        await _write(db, org_id, device_id, _readings(day, 1_200))
        await _write(db, org_id, device_id, _readings(recent, 50))
    readings, rollups = await _snapshot(db, org_id, day), await _rollups(db, org_id, day)
    assert readings

    # Not archived yet: retention keeps the day, although it is past raw_days.
    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert report.archived_days_purged == 0
    assert await count_day(db, org_id, day) == len(readings)

    await archive_day(db, store, org_id=org_id, day=day)
    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert report.archived_days_purged == 1
    assert await count_day(db, org_id, day) == 0
    assert await count_day(db, org_id, recent) == 2 * (50 + 3 * 5)  # within raw_days
    assert await _rollups(db, org_id, day) == rollups  # roll-ups outlive raw readings
    with pytest.raises(Conflict, match="Restore it first"):  # its only copy is the archive
        await archive_day(db, store, org_id=org_id, day=day)

    restored = await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    assert (restored.rows, restored.stored, restored.duplicates) == (len(readings),) * 2 + (0,)
    assert await _snapshot(db, org_id, day) == readings
    _same_rollups(rollups, await _rollups(db, org_id, day))
    again = await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    assert (again.stored, again.duplicates) == (0, len(readings))  # idempotent
    assert await _snapshot(db, org_id, day) == readings
    _same_rollups(rollups, await _rollups(db, org_id, day))


async def test_restore_of_one_device(live_database: Database, tmp_path: Path) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    for device_id in devices:
        await _write(db, org_id, device_id, _readings(day, 300))
    before = await _snapshot(db, org_id, day)
    await archive_day(db, store, org_id=org_id, day=day)
    await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert await count_day(db, org_id, day) == 0
    report = await restore_day(
        db, store, org_id=org_id, day=day, device_id=devices[1], submit=await _submit(db)
    )
    assert report.stored == len(before) // 2
    assert await _snapshot(db, org_id, day) == [r for r in before if r[0] == str(devices[1])]
    async with db.session() as session:
        record = await session.scalar(
            select(TelemetryArchive).where(TelemetryArchive.organization_id == org_id)
        )
    assert record is not None
    assert record.purged_at is not None  # the other device's readings are still only archived


async def test_late_readings_keep_the_day_until_archived_again(
    live_database: Database, tmp_path: Path
) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    await _write(db, org_id, devices[0], _readings(day, 100))
    await archive_day(db, store, org_id=org_id, day=day)
    await _write(db, org_id, devices[1], [Reading("temp", day_start_ms(day) + 5, Kind.NUMBER, 1.0)])

    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert (report.archived_days_purged, report.archive_mismatches) == (0, 1)
    assert await count_day(db, org_id, day) == 100 + 3 * 10 + 1  # nothing deleted
    async with db.session() as session:
        record = await session.scalar(
            select(TelemetryArchive).where(TelemetryArchive.organization_id == org_id)
        )
    assert record is not None
    assert record.stale_at is not None

    # The job archives the stale day again; the next retention run deletes it.
    settings = make_settings(tmp_path)
    run = await run_archive(db, store, settings, now_ms=_now())
    assert run.days >= 1
    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert report.archived_days_purged >= 1  # the day, and the empty ones after it
    assert report.archive_mismatches == 0
    assert await count_day(db, org_id, day) == 0


async def test_job_archives_closed_days_only(live_database: Database, tmp_path: Path) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db)
    first = _old_day(5)
    await _write(db, org_id, devices[0], _readings(first, 10))
    await _write(db, org_id, devices[0], _readings(_old_day(0), 10))  # today
    settings = make_settings(tmp_path, archive_after_days=2)
    run = await run_archive(db, store, settings, now_ms=_now())
    async with db.session() as session:
        days = sorted(
            (
                await session.scalars(
                    select(TelemetryArchive.day).where(TelemetryArchive.organization_id == org_id)
                )
            ).all()
        )
    # From the first reading to the last day that ended 2 days ago; empty days too.
    assert days == [first + timedelta(days=i) for i in range(3)]
    assert run.rows == 10 + 3
    assert (await run_archive(db, store, settings, now_ms=_now())).days == 0  # nothing due


class _FullDisk(FilesystemStore):
    """A filesystem store whose disk fills up just before the manifest is written."""

    async def put(self, key: str, data: bytes) -> None:
        if key.endswith(layout.MANIFEST):
            raise OSError(28, "No space left on device")
        await super().put(key, data)


async def test_a_failed_archive_leaves_no_manifest_claiming_its_files(
    live_database: Database, tmp_path: Path
) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    await _write(db, org_id, devices[0], _readings(day, 200))
    await archive_day(db, store, org_id=org_id, day=day)
    await _write(db, org_id, devices[0], _readings(day, 20, offset=7))  # something new

    with pytest.raises(OSError, match="No space"):
        await archive_day(db, _FullDisk(store.root), org_id=org_id, day=day)

    prefix = store.root / f"org={org_id}" / f"day={day.isoformat()}"
    assert not (prefix / layout.MANIFEST).exists()
    assert not list((store.root / layout.STAGING).rglob("*.parquet"))
    report = await run_retention(
        db.engine, defaults=DEFAULTS, archived=archived_days(db)
    )  # the record is stale
    assert report.archived_days_purged == 0
    with pytest.raises(Invalid, match="missing"):
        await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    result = await archive_day(db, store, org_id=org_id, day=day)  # the next try completes
    assert result.rows == await count_day(db, org_id, day)


async def test_restore_refuses_bad_input_and_changes_nothing(
    live_database: Database, tmp_path: Path
) -> None:
    db, store = live_database, _store(tmp_path)
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    await _write(db, org_id, devices[0], _readings(day, 2_000))
    await archive_day(db, store, org_id=org_id, day=day, rows_per_file=1_000)
    await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert await count_day(db, org_id, day) == 0
    submit = await _submit(db)

    with pytest.raises(NotFound, match="no archive"):
        await restore_day(db, store, org_id=uuid.uuid4(), day=day, submit=submit)
    with pytest.raises(NotFound, match="no archive"):
        await restore_day(db, store, org_id=org_id, day=day - timedelta(days=1), submit=submit)
    with pytest.raises(NotFound, match="device"):
        await restore_day(db, store, org_id=org_id, day=day, device_id=uuid.uuid4(), submit=submit)

    prefix = store.root / f"org={org_id}" / f"day={day.isoformat()}"
    # A damaged second part: the first one is not restored either.
    part = prefix / layout.part_name(1)
    good = part.read_bytes()
    part.write_bytes(good[:100] + b"\x00" * 50 + good[150:])
    with pytest.raises(Invalid, match="sha256"):
        await restore_day(db, store, org_id=org_id, day=day, submit=submit)
    part.write_bytes(good[: len(good) // 2])
    with pytest.raises(Invalid, match="damaged"):
        await restore_day(db, store, org_id=org_id, day=day, submit=submit)
    part.write_bytes(good)
    # A damaged manifest.
    manifest = prefix / layout.MANIFEST
    original = manifest.read_bytes()
    manifest.write_bytes(original.replace(b'"rows"', b'"r0ws"', 1))
    with pytest.raises(Invalid, match=r"manifest .* is damaged"):
        await restore_day(db, store, org_id=org_id, day=day, submit=submit)
    manifest.unlink()
    with pytest.raises(Invalid, match=r"manifest .* is missing"):
        await restore_day(db, store, org_id=org_id, day=day, submit=submit)
    assert await count_day(db, org_id, day) == 0  # nothing was written by any of them
    manifest.write_bytes(original)
    report = await restore_day(db, store, org_id=org_id, day=day, submit=submit)
    assert report.stored == 2_000 + 3 * 200


def test_day_start_is_day_aligned() -> None:
    # The restore's roll-up rebuild relies on a day holding whole 1-hour buckets.
    assert day_start_ms(_old_day()) % 3_600_000 == 0
    assert DAY_MS % 3_600_000 == 0


async def _archive_in(store: MediaStore, db: Database) -> None:
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    await _write(db, org_id, devices[0], _readings(day, 500))
    readings = await _snapshot(db, org_id, day)
    await archive_day(db, store, org_id=org_id, day=day)
    report = await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert report.archived_days_purged == 1
    keys = {key async for key, _ in store.keys("")}
    assert f"org={org_id}/day={day.isoformat()}/{layout.MANIFEST}" in keys
    assert not [k for k in keys if k.startswith(layout.STAGING)]
    await restore_day(db, store, org_id=org_id, day=day, submit=await _submit(db))
    assert await _snapshot(db, org_id, day) == readings


async def test_archive_and_restore_on_s3(
    live_database: Database,
    s3_endpoint: str,  # noqa: F811 (the fixture imported above)
) -> None:
    store = S3Store(
        BUCKET, prefix=f"archive-{uuid.uuid4().hex[:8]}", endpoint=s3_endpoint, region="us-east-1"
    )
    await _archive_in(store, live_database)


def test_cli_restore_names_what_is_wrong(live_database: Database, tmp_path: Path) -> None:
    env = {"FLEETCORE_DATA_DIR": str(tmp_path)}
    org = str(uuid.uuid4())
    result = run_cli(live_database, "archive", "restore", "--org", org, "--day", "2020-01-01", env)
    assert result.returncode == 1
    assert f"no archive of organization {org} on 2020-01-01" in result.stderr
    result = run_cli(live_database, "archive", "restore", "--org", org, "--day", "2020-13-01", env)
    assert result.returncode == 2
    assert "YYYY-MM-DD" in result.stderr


async def test_cli_archives_and_restores(live_database: Database, tmp_path: Path) -> None:
    db = live_database
    org_id, devices = await _org(db, GATED)
    day = _old_day(10)
    await _write(db, org_id, devices[0], _readings(day, 300))
    readings = await _snapshot(db, org_id, day)
    env = {"FLEETCORE_DATA_DIR": str(tmp_path)}
    archived = run_cli(db, "archive", "run", "--org", str(org_id), "--day", day.isoformat(), env)
    assert archived.returncode == 0, archived.stderr
    assert f"1 days archived, {len(readings)} readings" in archived.stdout
    assert (tmp_path / "archive" / f"org={org_id}" / f"day={day}" / layout.MANIFEST).exists()
    listed = run_cli(db, "archive", "list", "--org", str(org_id), env)
    assert f"{day}" in listed.stdout
    assert "archived" in listed.stdout
    await run_retention(db.engine, defaults=DEFAULTS, archived=archived_days(db))
    assert await count_day(db, org_id, day) == 0
    restored = run_cli(
        db, "archive", "restore", "--org", str(org_id), "--day", day.isoformat(), env
    )
    assert restored.returncode == 0, restored.stderr
    assert f"{len(readings)} readings read: {len(readings)} stored" in restored.stdout
    assert await _snapshot(db, org_id, day) == readings
