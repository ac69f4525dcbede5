"""Group commit on the HTTP device path: requests that arrive together share one commit,
each is answered only after it, and a commit that fails answers every request in it with
an error and stores none of them (nothing half-stored).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from prometheus_client import REGISTRY

from fleetcore.db import Database
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.tenants import Tenant
from tests.support.wait import wait_until
from tests.test_pipeline import BASE_TS, _device, _stored, _writer_blocked

POISON = 666.0  # the value the trigger below refuses
PATH = "/api/v1/devices/me/telemetry"


def _batches() -> float:
    return REGISTRY.get_sample_value("fleetcore_telemetry_batch_size_count") or 0.0


@asynccontextmanager
async def _refusing(db: Database) -> AsyncIterator[None]:
    """A trigger that fails any insert of POISON into ts_num (the commit of its batch fails)."""
    async with db.engine.begin() as connection:
        if db.dialect == "postgresql":
            await connection.exec_driver_sql(
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.value = {POISON} THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$"
            )
            await connection.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON ts_num "
                "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
            )
        else:
            await connection.exec_driver_sql(
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON ts_num "
                f"WHEN NEW.value = {POISON} BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    try:
        yield
    finally:
        async with db.engine.begin() as connection:
            if db.dialect == "postgresql":
                await connection.exec_driver_sql("DROP TRIGGER refuse_poison ON ts_num")
                await connection.exec_driver_sql("DROP FUNCTION refuse_poison()")
            else:
                await connection.exec_driver_sql("DROP TRIGGER refuse_poison")


async def _device_tokens(http: httpx.AsyncClient, tenant: Tenant, count: int) -> list[str]:
    tokens = []
    for i in range(count):
        created = await http.post(
            "/api/v1/devices",
            headers=tenant.headers(),
            json={"name": f"g{i}", "serial_number": f"GROUP-{i}"},
        )
        token = created.json()["access_token"]
        first = await http.post(PATH, headers={"X-Device-Token": token}, json={"hello": 1})
        assert first.status_code == 200  # activates the device (a write of its own)
        tokens.append(token)
    return tokens


def _post(
    http: httpx.AsyncClient, token: str, ts: int, value: float
) -> asyncio.Task[httpx.Response]:
    body = {"ts": ts, "values": {"t": value}}
    return asyncio.create_task(http.post(PATH, headers={"X-Device-Token": token}, json=body))


async def test_requests_that_arrive_together_share_one_commit(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
) -> None:
    pipeline: IngestPipeline = live_app.state.pipeline
    tokens = await _device_tokens(live_client, live_tenant, 20)
    before_rows = await _stored(live_database)
    batches_before = _batches()
    async with _writer_blocked(live_database):
        # The first request's batch waits on the lock; the other 19 gather behind it.
        first = _post(live_client, tokens[0], BASE_TS, 1.0)
        await wait_until(lambda: pipeline.pending == 1 and pipeline.waiting == 0, within=20)
        rest = [_post(live_client, t, BASE_TS, 1.0) for t in tokens[1:]]
        await wait_until(lambda: pipeline.pending == 20, within=20)
        assert not first.done()  # nothing answered before its commit
        assert not any(r.done() for r in rest)
    responses = await asyncio.gather(first, *rest)
    assert [r.status_code for r in responses] == [200] * 20
    assert all(
        r.json() == {"stored": 1, "duplicates": 0, "rejected": [], "flagged": []} for r in responses
    )
    # The first request's batch, then one for all the others: 2 commits for 20 requests.
    assert _batches() - batches_before == 2
    assert await _stored(live_database) == before_rows + 20


async def test_a_failed_commit_answers_each_request_in_it_and_stores_none(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
) -> None:
    pipeline: IngestPipeline = live_app.state.pipeline
    tokens = await _device_tokens(live_client, live_tenant, 6)
    before_rows = await _stored(live_database)
    async with _refusing(live_database):
        async with _writer_blocked(live_database):
            first = _post(live_client, tokens[0], BASE_TS, 1.0)  # a batch of its own: stored
            await wait_until(lambda: pipeline.pending == 1 and pipeline.waiting == 0, within=20)
            # One batch: four good readings and one the database refuses.
            doomed = [_post(live_client, t, BASE_TS, 2.0) for t in tokens[1:5]]
            doomed.append(_post(live_client, tokens[5], BASE_TS, POISON))
            await wait_until(lambda: pipeline.pending == 6, within=20)
        responses = await asyncio.gather(*doomed)
        assert (await first).status_code == 200
    for response in responses:
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "INGEST_WRITE_FAILED"
        assert response.headers["retry-after"]
    assert await _stored(live_database) == before_rows + 1  # none of the failed batch
    # Sent again (the trigger gone), each is stored once.
    again = await asyncio.gather(*(_post(live_client, t, BASE_TS, 2.0) for t in tokens[1:]))
    assert [r.status_code for r in again] == [200] * 5
    assert await _stored(live_database) == before_rows + 6


async def test_a_whole_batch_waiting_ends_the_wait_for_more(live_database: Database) -> None:
    """flush_interval_s bounds the wait for a batch to fill; a full one is written at once."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(
        TelemetryWriter(live_database.engine), batch_size=10, flush_interval_s=3600
    )
    await pipeline.start()
    try:
        readings = [Reading("t", BASE_TS + i, Kind.NUMBER, float(i)) for i in range(10)]
        future = pipeline.enqueue(DeviceReadings(device_id, org_id, readings))
        outcome = await asyncio.wait_for(future, 60)  # a deadline, far below the interval
    finally:
        await pipeline.stop()
    assert (outcome.stored, outcome.duplicates) == (10, 0)
    assert await _stored(live_database) == 10


async def test_without_a_wait_each_batch_is_what_gathered_meanwhile(
    live_database: Database,
) -> None:
    """flush_interval_s=0: an idle writer writes at once; what arrives during a write is
    the next batch, whole."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=0)
    await pipeline.start()
    try:
        batches_before = _batches()
        async with _writer_blocked(live_database):
            first = pipeline.enqueue(
                DeviceReadings(device_id, org_id, [Reading("t", BASE_TS, Kind.NUMBER, 0.0)])
            )
            # Taken at once (no wait for more), its write held by the lock.
            await wait_until(lambda: pipeline.waiting == 0, within=20)
            rest = [
                pipeline.enqueue(
                    DeviceReadings(
                        device_id, org_id, [Reading("t", BASE_TS + i, Kind.NUMBER, float(i))]
                    )
                )
                for i in range(1, 30)
            ]
        outcomes = await asyncio.gather(first, *rest)
    finally:
        await pipeline.stop()
    assert all((o.stored, o.duplicates) == (1, 0) for o in outcomes)
    assert _batches() - batches_before <= 2
    assert await _stored(live_database) == 30


async def test_a_lone_submission_is_written_without_waiting_the_interval(
    live_database: Database,
) -> None:
    """Nothing more coming: the batch is written after a quiet turn or two of the event
    loop, not after flush_interval_s (an hour here)."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=3600)
    await pipeline.start()
    try:
        future = pipeline.enqueue(
            DeviceReadings(device_id, org_id, [Reading("t", BASE_TS, Kind.NUMBER, 1.0)])
        )
        outcome = await asyncio.wait_for(future, 60)  # a deadline, far below the interval
    finally:
        await pipeline.stop()
    assert (outcome.stored, outcome.duplicates) == (1, 0)


async def test_submissions_that_keep_coming_share_one_batch(live_database: Database) -> None:
    """One submission every turn of the loop: the batcher waits for them all."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=3600)
    await pipeline.start()
    try:
        batches_before = _batches()
        futures = []
        for i in range(30):
            reading = Reading("t", BASE_TS + i, Kind.NUMBER, float(i))
            futures.append(pipeline.enqueue(DeviceReadings(device_id, org_id, [reading])))
            await asyncio.sleep(0)  # the next one a turn later
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 60)
    finally:
        await pipeline.stop()
    assert all((o.stored, o.duplicates) == (1, 0) for o in outcomes)
    assert _batches() - batches_before == 1
    assert await _stored(live_database) == 30


async def test_the_wait_for_more_ends_at_the_interval_from_the_oldest(
    live_database: Database,
) -> None:
    """Submissions that never stop coming do not hold the first one past flush_interval_s:
    it is written (and answered) while they still come."""
    device_id, org_id = await _device(live_database)
    pipeline = IngestPipeline(TelemetryWriter(live_database.engine), flush_interval_s=0.05)
    await pipeline.start()
    try:
        first = pipeline.enqueue(
            DeviceReadings(device_id, org_id, [Reading("t", BASE_TS, Kind.NUMBER, 0.0)])
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 60
        sent = 1
        while not first.done() and loop.time() < give_up:
            reading = Reading("t", BASE_TS + sent, Kind.NUMBER, float(sent))
            pipeline.enqueue(DeviceReadings(device_id, org_id, [reading]))
            sent += 1
            await asyncio.sleep(0)  # one more every turn: never a quiet one
        assert first.done(), "the first submission waited for the stream to end"
    finally:
        await pipeline.stop()
    assert (first.result().stored, first.result().duplicates) == (1, 0)
    assert await _stored(live_database) == sent
