"""Compaction and transparent reads: every reader answers the same before and after closed
days are packed, late readings are merged and never lost or doubled, retention removes
packed hours, and the raw bytes of compacted days go away (PostgreSQL: partitions dropped;
SQLite: pages handed back by incremental vacuum). Both databases, each its own encoding."""

from __future__ import annotations

import asyncio
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore import migrate
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry import partitions
from fleetcore.telemetry.compaction import cutoff_for, run_compaction
from fleetcore.telemetry.packed import newest_number
from fleetcore.telemetry.queries import device_series, read_rows
from fleetcore.telemetry.retention import Policy, run_retention
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.conftest import client_for, running_app
from tests.support import forkserver
from tests.support.devices import new_device
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.postgres import PostgresServer
from tests.support.tenants import Tenant, make_tenant
from tests.support.writer_db import make_devices, own_database, rows

DAY = partitions.DAY_MS
MIN = 60_000
NOW = int(time.time() * 1000)
START = NOW - 5 * DAY  # the suite's range: five days, the oldest three packed
END = NOW


@pytest.fixture
async def database(
    backend: str, postgres_server: PostgresServer | None, sqlite_template: Path, tmp_path: Path
) -> AsyncIterator[Database]:
    """A migrated database of this test's own (its partitions are the test's business)."""
    if backend == "postgresql":
        database = await own_database(postgres_server, "compaction", pool_size=6)
        # Daily partitions for the old days too, as a long-running server has them.
        await partitions.ensure_partitions(database.engine, days_ahead=7, now_ms=START)
    else:
        shutil.copyfile(sqlite_template, tmp_path / "c.db")
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool_size=6)
        await migrate.upgrade(database)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def site(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Tenant]]:
    """The app on that database (its own compaction job off: the test runs it) and an org."""
    async with (
        running_app(database, tmp_path, telemetry_compact_after_days=0) as app,
        client_for(app) as http,
    ):
        yield http, await make_tenant(http, database)


def _readings(rng: random.Random) -> list[Reading]:
    """Five days of a device: temperatures every 10 min (2 decimals), full-precision doubles
    at odd moments, text and booleans hourly."""
    out: list[Reading] = []
    temp = 21.0
    for ts in range(START + 7_000, END - MIN, 10 * MIN):
        temp = round(temp + rng.uniform(-0.3, 0.3), 2)
        out.append(Reading("temp", ts, Kind.NUMBER, temp))
        if rng.random() < 0.3:
            out.append(
                Reading("noise", ts + rng.randrange(1, 9_000), Kind.NUMBER, rng.gauss(0, 1e6))
            )
    for ts in range(START, END - MIN, 60 * MIN):
        out.append(Reading("mode", ts, Kind.TEXT, rng.choice(["auto", "=cmd", "off"])))
        out.append(Reading("on", ts + 1, Kind.BOOLEAN, rng.random() < 0.5))
    return out


async def _write(database: Database, org: Tenant, device_id: str, readings: list[Reading]) -> Any:
    writer = TelemetryWriter(database.engine)
    item = DeviceReadings(uuid.UUID(device_id), org.org_id, readings)
    result = await writer.write([item])
    await writer.settle()
    return result


async def _pages(http: httpx.AsyncClient, url: str, headers: Any, **params: Any) -> list[Any]:
    """Every raw page, cursor after cursor."""
    pages, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(url, headers=headers, params=query)).json()
        pages.append(page)
        cursor = page.get("next_cursor")
        if not cursor:
            return pages


async def _suite(
    http: httpx.AsyncClient, org: Tenant, database: Database, device_id: str
) -> dict[str, Any]:
    """What every reader of the value tables answers."""
    viewer = org.headers(Role.VIEWER)
    url = f"/api/v1/devices/{device_id}/telemetry"
    span = {"start": str(START), "end": str(END)}
    odd = {"start": str(START + DAY + 17 * MIN + 3), "end": str(END - DAY - 5 * MIN)}
    answers: dict[str, Any] = {
        "asc": await _pages(http, url, viewer, limit=97, **span),
        "desc": await _pages(http, url, viewer, limit=113, order="desc", **span),
        "temp_odd": await _pages(http, url, viewer, limit=1000, keys="temp,noise", **odd),
    }
    for interval, agg in [("1h", "avg"), ("1h", "min"), ("1d", "max"), ("15m", "first")]:
        params = {"interval": interval, "agg": agg, **(odd if interval == "15m" else span)}
        answers[f"{interval}/{agg}"] = (await http.get(url, headers=viewer, params=params)).json()
    fine = {"start": str(START + DAY + 7 * MIN), "end": str(START + DAY + 127 * MIN)}
    for name, params in [("chart_raw", {**fine, "width": 300}), ("chart", {**span, "width": 50})]:
        chart = await http.get(f"{url}/chart", headers=viewer, params=params)
        assert chart.status_code == 200, chart.text
        answers[name] = chart.json()
    answers["latest"] = (await http.get(f"{url}/latest", headers=viewer)).json()
    export = await http.get(f"{url}/export", headers=viewer, params=span)
    assert export.status_code == 200, export.text
    answers["csv"] = export.content
    dry = await http.post(
        "/api/v1/rules/dry-run",
        headers=viewer,
        json={
            "device_id": device_id,
            "condition": {"key": "temp", "op": ">", "value": 21.0},
            "duration_s": 600,
            **span,
        },
    )
    assert dry.status_code == 200, dry.text
    answers["dry_run"] = dry.json()
    async with database.session() as session:  # analytics replays, rule warm-up, safety gate
        series = await device_series(session, uuid.UUID(device_id), org.org_id)
        answers["read_rows"] = await read_rows(session, series, START, END, limit=100_000)
        by_key = {s.key: s.id for s in series}
        answers["newest"] = [
            await newest_number(session, by_key["temp"], at_most=at)
            for at in (START - 1, START + DAY, NOW - 3 * DAY + 1234, NOW)
        ]
    return answers


async def _raw_numbers(database: Database) -> int:
    return int((await rows(database, "SELECT count(*) FROM ts_num"))[0][0])


async def test_every_reader_answers_the_same_after_compaction(
    database: Database, site: tuple[httpx.AsyncClient, Tenant], backend: str
) -> None:
    http, org = site
    device_id, _ = await new_device(http, org)
    readings = _readings(random.Random(21))
    await _write(database, org, device_id, readings)
    before = await _suite(http, org, database, device_id)
    assert len(before["read_rows"]) == len(readings)
    dry = await run_compaction(database.engine, after_days=2, now_ms=NOW, dry_run=True)
    report = await run_compaction(database.engine, after_days=2, now_ms=NOW)
    after = await _suite(http, org, database, device_id)
    for name in before:
        assert after[name] == before[name], name
    cutoff = cutoff_for(NOW, 2)
    old = sum(1 for r in readings if r.kind is Kind.NUMBER and r.ts < cutoff)
    assert (dry.readings, report.readings) == (old, old)
    assert dry.blocks == report.blocks > 0
    assert await _raw_numbers(database) == len([r for r in readings if r.kind is Kind.NUMBER]) - old
    again = await run_compaction(database.engine, after_days=2, now_ms=NOW)
    assert again.readings == 0
    if backend == "sqlite":
        # The raw rows' pages went back to the file system (a new file: incremental).
        assert report.pages_freed > 0
        assert (await rows(database, "PRAGMA freelist_count"))[0][0] == 0
        return
    # The closed days' partitions are gone (their bytes with them); none is left with rows.
    assert report.partitions_dropped
    left = {p.name for p in await partitions.daily_partitions(database.engine)}
    assert not left & set(report.partitions_dropped)


async def test_late_readings_merge_into_packed_hours_once(
    database: Database, site: tuple[httpx.AsyncClient, Tenant]
) -> None:
    http, org = site
    device_id, _ = await new_device(http, org)
    base = cutoff_for(NOW, 2) - 2 * DAY  # a packed day
    first = [Reading("t", base + i * 10_000, Kind.NUMBER, float(i)) for i in range(720)]
    await _write(database, org, device_id, first)
    await run_compaction(database.engine, after_days=2, now_ms=NOW)
    assert await _raw_numbers(database) == 0
    # Late: half already packed (other values: the first write wins), half new, in the
    # same hours; one new reading twice in the batch.
    late = [Reading("t", base + i * 10_000, Kind.NUMBER, -1.0) for i in range(0, 720, 7)]
    late += [Reading("t", base + i * 10_000 + 5, Kind.NUMBER, 0.5 * i) for i in range(0, 720, 5)]
    late.append(Reading("t", base + 5, Kind.NUMBER, 99.0))
    result = await _write(database, org, device_id, late)
    new = list(range(0, 720, 5))
    assert len(result.stored) == len(new)
    assert result.duplicates == len(late) - len(new)
    viewer = org.headers(Role.VIEWER)
    url = f"/api/v1/devices/{device_id}/telemetry"
    span = {"start": str(base), "end": str(base + DAY)}

    def expected() -> list[tuple[int, float]]:
        stamps = [(base + i * 10_000, float(i)) for i in range(720)]
        stamps += [(base + i * 10_000 + 5, 0.5 * i) for i in new]
        return sorted(stamps)

    async def stored() -> list[tuple[int, float]]:
        pages = await _pages(http, url, viewer, limit=250, **span)
        return [(r["ts"], r["value"]) for p in pages for r in p["items"]]

    assert await stored() == expected()
    # Roll-ups and latest stay exact: hourly sums and counts of everything stored.
    hourly = (
        await http.get(url, headers=viewer, params={"interval": "1h", "agg": "sum", **span})
    ).json()
    counts = (
        await http.get(url, headers=viewer, params={"interval": "1h", "agg": "count", **span})
    ).json()
    for bucket, count in zip(hourly["buckets"], counts["buckets"], strict=True):
        inside = [v for ts, v in expected() if bucket["ts"] <= ts < bucket["ts"] + 3_600_000]
        assert bucket["values"]["t"] == (sum(inside) if inside else None)
        assert count["values"]["t"] == (len(inside) if inside else None)
    # The next run re-packs the touched hours; nothing moves, nothing doubles.
    report = await run_compaction(database.engine, after_days=2, now_ms=NOW)
    assert report.readings == len(new)
    assert await _raw_numbers(database) == 0
    assert await stored() == expected()
    # Sent again after the re-pack: all duplicates.
    result = await _write(database, org, device_id, late)
    assert (len(result.stored), result.duplicates) == (0, len(late))


async def test_retention_removes_packed_hours_and_cuts_the_straddling_one(
    database: Database, site: tuple[httpx.AsyncClient, Tenant]
) -> None:
    http, org = site
    device_id, _ = await new_device(http, org)
    base = cutoff_for(NOW, 2) - 2 * DAY
    readings = [Reading("t", base + i * MIN, Kind.NUMBER, float(i)) for i in range(24 * 60)]
    await _write(database, org, device_id, readings)
    await run_compaction(database.engine, after_days=2, now_ms=NOW)
    cut = base + 10 * 3_600_000 + 30 * MIN + 1  # inside the 11th hour
    await run_retention(database.engine, defaults=Policy(1, 0, 0), now_ms=cut + DAY, chunk_rows=5)
    async with database.session() as session:
        series = await device_series(session, uuid.UUID(device_id), org.org_id)
        left = await read_rows(session, series, base - DAY, base + 2 * DAY, limit=10_000)
    assert [r.ts for r in left] == [r.ts for r in readings if r.ts >= cut]
    blocks = await rows(database, "SELECT min(block), count(*) FROM ts_num_packed")
    assert blocks == [(base + 10 * 3_600_000, 14)]


async def test_cli_reports_what_it_would_pack_and_what_it_packed(database: Database) -> None:
    """`fleetcore telemetry compact` on a database with three old hours of readings."""
    org_id, devices = await make_devices(database, 1)
    base = cutoff_for(NOW, 2) - DAY
    readings = [Reading("t", base + i * 108_000, Kind.NUMBER, 1.5) for i in range(100)]
    writer = TelemetryWriter(database.engine)
    await writer.write([DeviceReadings(devices[0], org_id, readings)])
    await writer.settle()
    url = database.engine.url.render_as_string(hide_password=False)
    env = fleetcore_env(FLEETCORE_DATABASE_URL=url)

    def compact(*args: str) -> str:
        done = forkserver.run(
            [FLEETCORE, "telemetry", "compact", *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    dry = await asyncio.to_thread(compact, "--dry-run")
    assert "would pack 100 readings of 1 series into 3 hourly blocks" in dry
    assert await _raw_numbers(database) == 100
    done = await asyncio.to_thread(compact)
    assert "packed 100 readings of 1 series into 3 hourly blocks" in done
    assert "packed 0 readings" in await asyncio.to_thread(compact)
    assert await _raw_numbers(database) == 0
    async with database.session() as session:
        series = await device_series(session, devices[0], org_id)
        stored = await read_rows(session, series, base, base + DAY, limit=1_000)
    assert [(r.ts, r.value) for r in stored] == [(r.ts, r.value) for r in readings]
