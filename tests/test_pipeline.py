"""The pipeline's guarantees, each with a test that fails if it breaks.

Durable before acknowledged; stored once however often it arrives; bounded queues push back
and drop nothing accepted; a crash between accept and commit loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import SQLITE_BEGIN_OPTION, Database, create_engine
from fleetcore.devices.models import Device
from fleetcore.telemetry.models import VALUE_TABLES
from fleetcore.telemetry.pipeline import IngestPipeline, Overloaded
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.postgres import free_port
from tests.support.wait import wait_until

BASE_TS = 1_790_000_000_000


async def _device(db: Database) -> tuple[uuid.UUID, uuid.UUID]:
    async with db.session() as session:
        org = await users.create_organization(
            session, None, data=OrganizationIn(name="p", slug=f"p-{uuid.uuid4().hex[:8]}")
        )
        device = Device(organization_id=org.id, name="d", serial_number=uuid.uuid4().hex)
        session.add(device)
        await session.commit()
        return device.id, org.id


def _readings(start: int, count: int, key: str = "t") -> list[Reading]:
    return [Reading(key, BASE_TS + start + i, Kind.NUMBER, float(i)) for i in range(count)]


async def _stored(db: Database) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(select(func.count()).select_from(VALUE_TABLES[Kind.NUMBER])) or 0
        )


@asynccontextmanager
async def _writer_blocked(db: Database) -> AsyncIterator[None]:
    """Hold the value table's write lock from another connection, so the real writer waits."""
    engine = create_engine(db.engine.url, pool_size=1)
    async with engine.connect() as connection:
        await connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        transaction = await connection.begin()
        if db.dialect == "postgresql":
            await connection.exec_driver_sql("LOCK TABLE ts_latest IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    await engine.dispose()


async def test_acknowledged_means_committed(live_database: Database) -> None:
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=0.001)
    await pipeline.start()
    try:
        outcome = await pipeline.submit(DeviceReadings(device_id, org_id, _readings(0, 50)))
        # Another connection (another engine: no shared transaction) sees all 50 at once.
        engine = create_engine(live_database.engine.url, pool_size=1)
        async with engine.connect() as connection:
            seen = await connection.scalar(text("SELECT count(*) FROM ts_num"))
        await engine.dispose()
    finally:
        await pipeline.stop()
    assert outcome.stored == 50
    assert seen == 50


async def test_concurrent_duplicates_are_stored_once(live_database: Database) -> None:
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=0.05)
    await pipeline.start()
    try:
        item = DeviceReadings(device_id, org_id, _readings(0, 20))
        outcomes = await asyncio.gather(*(pipeline.submit(item) for _ in range(5)))
        again = await pipeline.submit(item)
    finally:
        await pipeline.stop()
    assert sum(o.stored for o in outcomes) == 20
    assert sum(o.duplicates for o in outcomes) == 80
    assert (again.stored, again.duplicates) == (0, 20)
    assert await _stored(live_database) == 20


async def test_full_queue_pushes_back_and_drops_nothing_accepted(live_database: Database) -> None:
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(
        TelemetryWriter(live_database.engine),
        max_pending=100,
        batch_size=10,
        flush_interval_s=0.001,
    )
    await pipeline.start()
    accepted: list[asyncio.Future[object]] = []
    refused = 0
    last_refusal = Overloaded(retry_after_s=0)
    try:
        async with _writer_blocked(live_database):
            for i in range(30):
                try:
                    accepted.append(
                        pipeline.enqueue(DeviceReadings(device_id, org_id, _readings(i * 10, 10)))  # type: ignore[arg-type]
                    )
                except Overloaded as exc:
                    refused += 1
                    last_refusal = exc
            assert pipeline.pending <= 100
            assert not any(f.done() for f in accepted), "acknowledged while the writer was blocked"
        results = await asyncio.gather(*accepted)
    finally:
        await pipeline.stop()
    assert refused > 0
    assert (last_refusal.status_code, last_refusal.headers["Retry-After"]) == (503, "1")
    assert len(accepted) + refused == 30
    assert sum(r.stored for r in results) == len(accepted) * 10  # type: ignore[attr-defined]
    assert await _stored(live_database) == len(accepted) * 10


async def test_stop_writes_everything_accepted(live_database: Database) -> None:
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=1.0)
    await pipeline.start()
    futures = [
        pipeline.enqueue(DeviceReadings(device_id, org_id, _readings(i * 5, 5))) for i in range(40)
    ]
    await pipeline.stop()
    assert all(f.done() and not f.exception() for f in futures)
    assert await _stored(live_database) == 200
    with pytest.raises(Overloaded):
        pipeline.enqueue(DeviceReadings(device_id, org_id, _readings(9999, 1)))


async def test_http_answers_503_with_retry_after_when_full(
    live_database: Database, tmp_path: Path
) -> None:
    from tests.conftest import client_for, running_app
    from tests.support.tenants import make_tenant

    async with (
        running_app(live_database, tmp_path, ingest_max_pending=100) as app,
        client_for(app) as http,
    ):
        tenant = await make_tenant(http, live_database)
        created = await http.post(
            "/api/v1/devices",
            headers=tenant.headers(),
            json={"name": "d", "serial_number": "B1"},
        )
        token = created.json()["access_token"]
        body = [{"ts": BASE_TS + i, "values": {"t": i}} for i in range(60)]

        async def post(offset: int) -> httpx.Response:
            shifted = [{"ts": r["ts"] + offset * 1000, "values": r["values"]} for r in body]
            return await http.post(
                "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=shifted
            )

        first = await post(100)  # the device's first call activates it (a write)
        assert first.status_code == 200
        async with _writer_blocked(live_database):
            tasks = [asyncio.create_task(post(i)) for i in range(5)]
            await wait_until(lambda: sum(t.done() for t in tasks) >= 3, within=20)
        responses = await asyncio.gather(*tasks)
    statuses = sorted(r.status_code for r in responses)
    busy = [r for r in responses if r.status_code == 503]
    assert busy, statuses
    assert all(r.headers["retry-after"] for r in busy)
    assert all(r.json()["error"]["code"] == "INGEST_OVERLOADED" for r in busy)
    ok = [r for r in responses if r.status_code == 200]
    assert ok
    assert await _stored(live_database) == 60 * (len(ok) + 1)


def _env(data_dir: Path) -> dict[str, str]:
    env = fleetcore_env()
    env.update(
        FLEETCORE_DATA_DIR=str(data_dir), FLEETCORE_LOG_LEVEL="warning", FLEETCORE_MQTT_PORT="0"
    )
    return env


async def test_crash_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """SIGKILL the server while devices post; every reading answered 200 is on disk."""
    data_dir = tmp_path / "data"
    password = "crash test password"
    forkserver.run(
        [
            FLEETCORE,
            "admin",
            "create-superuser",
            "--email",
            "c@example.com",
            "--password",
            password,
        ],
        env=_env(data_dir),
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    server = forkserver.popen(
        [FLEETCORE, "serve", "--port", str(port)],
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    acknowledged: set[int] = set()
    try:
        async with local_client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(healthy, within=30, every=0.1)
            token = (
                await http.post(
                    "/api/v1/auth/login", json={"email": "c@example.com", "password": password}
                )
            ).json()
            admin = {"Authorization": f"Bearer {token['access_token']}"}
            org = (
                await http.post(
                    "/api/v1/organizations", headers=admin, json={"name": "c", "slug": "crash"}
                )
            ).json()
            assert org["id"]
            device = (
                await http.post(
                    "/api/v1/users",
                    headers=admin,
                    json={
                        "email": "m@example.com",
                        "password": password,
                        "role": "manager",
                        "organization_id": org["id"],
                    },
                )
            ).json()
            assert device["id"]
            manager = (
                await http.post(
                    "/api/v1/auth/login", json={"email": "m@example.com", "password": password}
                )
            ).json()
            created = await http.post(
                "/api/v1/devices",
                headers={"Authorization": f"Bearer {manager['access_token']}"},
                json={"name": "d", "serial_number": "CRASH-1"},
            )
            device_token = created.json()["access_token"]

            async def sender(worker: int) -> None:
                for i in range(10_000):
                    ts = BASE_TS + worker * 1_000_000 + i
                    try:
                        response = await http.post(
                            "/api/v1/devices/me/telemetry",
                            headers={"X-Device-Token": device_token},
                            json={"ts": ts, "values": {"t": i}},
                        )
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        acknowledged.add(ts)

            senders = [asyncio.create_task(sender(w)) for w in range(8)]
            await wait_until(lambda: len(acknowledged) >= 300, within=60)
            server.send_signal(signal.SIGKILL)
            await asyncio.gather(*senders)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=30)
    database = Database.from_url(f"sqlite+aiosqlite:///{data_dir / 'fleetcore.db'}")
    try:
        async with database.session() as session:
            stored = set((await session.execute(select(VALUE_TABLES[Kind.NUMBER].c.ts))).scalars())
    finally:
        await database.close()
    assert len(acknowledged) >= 300
    missing = acknowledged - stored
    assert not missing, f"{len(missing)} acknowledged readings lost"
    assert time.time() > 0


async def test_many_devices_first_calls_at_once(
    live_client: httpx.AsyncClient, live_tenant: object, live_database: Database
) -> None:
    """First calls activate devices (a write each); concurrently they must all succeed."""
    from tests.support.tenants import Tenant

    assert isinstance(live_tenant, Tenant)
    tokens = []
    for i in range(30):
        created = await live_client.post(
            "/api/v1/devices",
            headers=live_tenant.headers(),
            json={"name": "d", "serial_number": f"FIRST-{i}"},
        )
        tokens.append(created.json()["access_token"])
    responses = await asyncio.gather(
        *(
            live_client.post(
                "/api/v1/devices/me/telemetry", headers={"X-Device-Token": t}, json={"t": 1}
            )
            for t in tokens
        )
    )
    assert [r.status_code for r in responses] == [200] * 30
    assert await _stored(live_database) == 30


async def test_each_submission_gets_its_own_counts(live_database: Database) -> None:
    """Two submissions of one device in one batch, overlapping: each answer is exact."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=0.2)
    await pipeline.start()
    try:
        first = pipeline.enqueue(DeviceReadings(device_id, org_id, _readings(0, 10)))
        second = pipeline.enqueue(DeviceReadings(device_id, org_id, _readings(5, 10)))
        outcomes = await asyncio.gather(first, second)
    finally:
        await pipeline.stop()
    assert [(o.stored, o.duplicates) for o in outcomes] == [(10, 0), (5, 5)]
