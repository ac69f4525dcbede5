"""Archives: readings archived per second and Parquet bytes per reading, on both databases.

One organization's day of 10-second numeric data (DEVICES x KEYS series, like live data)
is written by TelemetryWriter, then archived by fleetcore.archive.writer.archive_day to the
filesystem store: the rate counts the whole path (reading through telemetry.export, Parquet
encoding with zstd, staging, the move into place and the manifest). Bytes per reading are
the Parquet files' sizes over the readings in them.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.support.postgres import PostgresServer

from bench.telemetry_ingest import make_devices, migrated, now_ms, writer_batch
from fleetcore.archive.writer import archive_day
from fleetcore.db import Database
from fleetcore.media.store import FilesystemStore
from fleetcore.telemetry.partitions import day_of, day_start_ms
from fleetcore.telemetry.writer import TelemetryWriter

DEVICES = 100
KEYS = 5  # bench.telemetry_ingest.writer_batch writes this many keys per device
INTERVAL_MS = 10_000
STEPS = 1_728  # 4.8 hours of the day: 864,000 readings keep the run to a minute or two


async def _measure(url: str, root: Path) -> dict[str, Any]:
    await migrated(url)
    database = Database.from_url(url, pool_size=4)
    try:
        org_id, devices = await make_devices(database, DEVICES)
        day = day_of(now_ms()) - timedelta(days=3)
        writer = TelemetryWriter(database.engine)
        base = day_start_ms(day)
        for step in range(STEPS):
            await writer.write(writer_batch(org_id, devices, base + step * INTERVAL_MS))
        runs = []
        for attempt in range(2):  # the second run re-archives: the same work, warm caches
            store = FilesystemStore(root / f"archive-{attempt}")
            begin = time.perf_counter()
            result = await archive_day(database, store, org_id=org_id, day=day)
            runs.append((time.perf_counter() - begin, result))
        seconds, result = min(runs, key=lambda run: run[0])
        return {
            "readings": result.rows,
            "files": len(result.files),
            "archive_readings_per_s": int(result.rows / seconds),
            "parquet_bytes_per_reading": round(result.bytes / max(1, result.rows), 2),
        }
    finally:
        await database.close()


async def _both(server: PostgresServer, root: Path) -> dict[str, Any]:
    sqlite = await _measure(f"sqlite+aiosqlite:///{root / 'archive.db'}", root / "sqlite")
    postgres = await _measure(server.create_database("bench_archive"), root / "postgresql")
    return {"sqlite": sqlite, "postgresql": postgres}


def run() -> dict[str, Any]:
    """Archive a day's readings on SQLite and PostgreSQL."""
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            figures = asyncio.run(_both(server, Path(tmp)))
    finally:
        server.stop()
    return {
        "name": "archive",
        "series": DEVICES * KEYS,
        "interval_ms": INTERVAL_MS,
        **figures,
        "note": "numbers 10 s apart, Parquet with zstd and dictionary-encoded device/key/kind; "
        "the rate is the whole archive of one organization-day (read, encode, stage, move, "
        "manifest), the faster of two runs; the machine is shared, so figures are noisy",
    }
