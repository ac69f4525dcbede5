"""The storage snapshot (`usage.storage`): telemetry rows exact (raw and packed hours), bytes
estimated, media bytes exact, per organization; the day's latest snapshot is its level."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fleetcore import migrate
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.media.store import MediaStore
from fleetcore.telemetry import partitions
from fleetcore.telemetry.compaction import cutoff_for, run_compaction
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore.usage import storage
from fleetcore.usage.kinds import UsageKind
from fleetcore_protocol.telemetry import Kind, Reading
from tests.conftest import client_for, running_app
from tests.support import images
from tests.support.devices import new_device
from tests.support.postgres import PostgresServer
from tests.support.tenants import Tenant, make_tenant
from tests.support.writer_db import own_database, rows

DAY = partitions.DAY_MS
MIN = 60_000
NOW = int(time.time() * 1000)
START = NOW - 5 * DAY
EVENTS = "/api/v1/devices/me/events"
UPLOADS = "/api/v1/devices/me/media/uploads"


@pytest.fixture
async def database(
    backend: str, postgres_server: PostgresServer | None, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[Database]:
    """A database of this test's own: packing old days drops PostgreSQL partitions."""
    if backend == "postgresql":
        database = await own_database(postgres_server, "usage_storage", pool_size=6)
        await partitions.ensure_partitions(database.engine, days_ahead=7, now_ms=START)
    else:
        shutil.copyfile(sqlite_template, tmp_path / "s.db")
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 's.db'}", pool_size=6)
        await migrate.upgrade(database)
    try:
        yield database
    finally:
        await database.close()


def _readings(hours: int, first: int) -> list[Reading]:
    """Numbers every 5 minutes from `first` for `hours`, and a text, a boolean and a JSON
    reading an hour."""
    out = [
        Reading("temp", ts, Kind.NUMBER, float(i))
        for i, ts in enumerate(range(first, first + hours * 60 * MIN, 5 * MIN))
    ]
    for h in range(hours):
        ts = first + h * 60 * MIN + 1
        out += [
            Reading("mode", ts, Kind.TEXT, "auto"),
            Reading("on", ts, Kind.BOOLEAN, h % 2 == 0),
            Reading("cfg", ts, Kind.JSON, {"h": h}),
        ]
    return out


async def _write(database: Database, org: Tenant, device_id: str, readings: list[Reading]) -> None:
    writer = TelemetryWriter(database.engine)
    result = await writer.write([DeviceReadings(uuid.UUID(device_id), org.org_id, readings)])
    await writer.settle()
    assert len(result.stored) == len(readings)


async def _upload(http: httpx.AsyncClient, token: str, data: bytes) -> None:
    """An image through the upload URL flow (stored, thumbnail made)."""
    created = await http.post(
        UPLOADS,
        headers={"X-Device-Token": token},
        json={"content_type": "image/jpeg", "bytes": len(data)},
    )
    assert created.status_code == 201, created.text
    put = await http.put(created.json()["upload_url"], content=data)
    assert put.status_code == 201, put.text


async def _stored_media_bytes(app: FastAPI, org: Tenant) -> int:
    """What the media store holds of an organization, file by file (keys lead with it)."""
    store: MediaStore = app.state.media_store
    return sum([stat.size async for _, stat in store.keys(f"{org.org_id.hex}/")])


async def _levels(http: httpx.AsyncClient, org: Tenant) -> dict[str, int]:
    response = await http.get("/api/v1/usage", headers=org.headers(Role.ADMIN))
    assert response.status_code == 200, response.text
    levels = (UsageKind.STORAGE_ROWS, UsageKind.STORAGE_BYTES, UsageKind.MEDIA_BYTES)
    return {r["kind"]: r["n"] for r in response.json()["rows"] if r["kind"] in levels}


async def test_storage_snapshot_counts_raw_and_packed_rows_bytes_and_media(
    database: Database, tmp_path: Path
) -> None:
    async with (
        running_app(database, tmp_path, telemetry_compact_after_days=0) as app,
        client_for(app) as http,
    ):
        a = await make_tenant(http, database)
        b = await make_tenant(http, database)
        idle = await make_tenant(http, database)  # nothing stored: no level rows at all
        device_a, token_a = await new_device(http, a)
        device_b, token_b = await new_device(http, b)
        old = cutoff_for(NOW, 2) - 2 * DAY  # a day compaction packs
        readings_a = _readings(30, old) + _readings(2, NOW - 3 * 60 * MIN)
        readings_b = _readings(5, old + 3 * 60 * MIN)
        await _write(database, a, device_a, readings_a)
        await _write(database, b, device_b, readings_b)
        report = await run_compaction(database.engine, after_days=2, now_ms=NOW)
        packed_old = sum(
            1 for r in readings_a + readings_b if r.kind is Kind.NUMBER and r.ts < report.cutoff_ms
        )
        assert report.readings == packed_old > 0
        [(packed_rows, packed_readings)] = await rows(
            database, "SELECT count(*), sum(n) FROM ts_num_packed"
        )
        assert packed_readings == packed_old
        assert packed_rows < packed_old  # hours, not readings: the count must come from n
        await _upload(http, token_a, images.jpeg((640, 480)))
        await _upload(http, token_a, images.jpeg((320, 200)))
        await _upload(http, token_b, images.jpeg((100, 100)))
        pending = await http.post(  # an upload URL never used: nothing stored, nothing counted
            UPLOADS,
            headers={"X-Device-Token": token_b},
            json={"content_type": "image/jpeg", "bytes": 1000},
        )
        assert pending.status_code == 201, pending.text

        levels = await storage.snapshot(database, now=utcnow())

        rows_of = levels[UsageKind.STORAGE_ROWS]
        assert rows_of == {a.org_id: len(readings_a), b.org_id: len(readings_b)}
        bytes_of = levels[UsageKind.STORAGE_BYTES]
        assert set(bytes_of) == {a.org_id, b.org_id}
        assert bytes_of[a.org_id] > bytes_of[b.org_id] > 0
        media_a, media_b = await _stored_media_bytes(app, a), await _stored_media_bytes(app, b)
        assert media_a > media_b > 0
        assert levels[UsageKind.MEDIA_BYTES] == {a.org_id: media_a, b.org_id: media_b}
        assert await _levels(http, a) == {
            "storage_rows": len(readings_a),
            "storage_bytes": bytes_of[a.org_id],
            "media_bytes": media_a,
        }
        assert await _levels(http, idle) == {}

        # The job, a second time the same day: the day's level is replaced, not added to.
        more = _readings(1, NOW - 60 * MIN)
        await _write(database, b, device_b, more)
        await _upload(http, token_b, images.jpeg((200, 150)))
        await app.state.jobs.run_once(storage.JOB_NAME)
        again = await _levels(http, b)
        assert again["storage_rows"] == len(readings_b) + len(more)
        assert again["media_bytes"] == await _stored_media_bytes(app, b) > media_b
        assert again["storage_bytes"] > 0
        assert (await _levels(http, a))["storage_rows"] == len(readings_a)

        # a's media deleted: the next snapshot of the day leaves it no media level.
        deleted = await http.delete(
            f"/api/v1/devices/{device_a}/media", headers=a.headers(Role.ADMIN)
        )
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["deleted_bytes"] == media_a
        await app.state.jobs.run_once(storage.JOB_NAME)
        after = await _levels(http, a)
        assert sorted(after) == ["storage_bytes", "storage_rows"]
        assert after["storage_rows"] == len(readings_a)
        assert (await _levels(http, b))["media_bytes"] == again["media_bytes"]
