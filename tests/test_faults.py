"""Faults against real processes, with zero-loss books: every reading the platform
acknowledged (HTTP 2xx, MQTT PUBACK) is stored exactly once whatever happens to the
server, its database or its disk, and readings sent again by their devices are absorbed."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from fleetcore.db import Database
from fleetcore.mqtt.handler import MAX_UNSTORED
from tests.support.devices import new_device
from tests.support.faults import (
    ServerProcess,
    fill,
    integrity,
    provision,
    read_storage,
    small_filesystem,
)
from tests.support.http_clients import local_client
from tests.support.latency_proxy import LatencyProxy
from tests.support.mqtt_raw import PINGREQ, PINGRESP, PUBACK, RawClient, packet, publish_packet
from tests.support.postgres import PostgresServer, free_port
from tests.support.senders import TOPIC, HttpSender, Ledger, MqttSender, check_storage
from tests.support.serving import serving
from tests.support.tenants import Tenant
from tests.support.wait import wait_until


def _database_url(backend: str, request: pytest.FixtureRequest, name: str) -> str | None:
    """None for SQLite (the server's data dir); a fresh database on the shared PostgreSQL."""
    if backend == "sqlite":
        return None
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    assert server is not None, "the fault tests need the throwaway PostgreSQL server"
    return server.create_database(f"{name}_{uuid.uuid4().hex[:8]}")


async def test_sigkill_mid_ingest_loses_nothing_acknowledged(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = ServerProcess(tmp_path, database_url=_database_url(backend, request, "faults_kill"))
    devices = await provision(server.database_url, 8)
    ledger = Ledger()
    mqtt: list[MqttSender] = []
    http = [HttpSender(d, ledger, server.base) for d in devices[4:]]
    try:
        await server.start()
        mqtt = [MqttSender(d, ledger, server.mqtt_port) for d in devices[:4]]
        await asyncio.gather(*(m.connect() for m in mqtt))
        stop = asyncio.Event()
        senders = [asyncio.create_task(s.run(stop)) for s in (*mqtt, *http)]

        def every_device_acknowledged(at_least: int) -> bool:
            return all(len(ledger.acked[d.id]) >= at_least for d in devices)

        await wait_until(lambda: every_device_acknowledged(200), within=60)
        # Frozen, the server acknowledges nothing more, so the reading each MQTT device sends
        # now is surely in flight at the kill (a test process kept off the CPU for a moment
        # had let the server acknowledge everything it had been sent).
        os.kill(server.pid, signal.SIGSTOP)
        for sender in mqtt:
            sender.publish_new()
        server.kill()  # while every sender has readings in flight
        stop.set()
        await asyncio.gather(*senders)
        for sender in mqtt:
            sender.close()
        assert ledger.unacked_count > 0  # the kill did catch readings in flight

        await server.start()  # same database, same ports
        check_storage(await read_storage(server.database_url), ledger, complete=False)

        # The devices send again what was never acknowledged; storage absorbs repeats.
        mqtt = [MqttSender(d, ledger, server.mqtt_port) for d in devices[:4]]
        await asyncio.gather(*(m.connect() for m in mqtt))
        await asyncio.gather(
            *(m.resend(ledger.unacked(m.device.id)) for m in mqtt),
            *(h.resend(ledger.unacked(h.device.id)) for h in http),
        )
        stored = check_storage(await read_storage(server.database_url), ledger, complete=True)
        assert stored == sum(len(s) for s in ledger.sent.values())
        assert not [p for h in http for p in h.problems]
        assert not [r for m in mqtt for r in m.refused]
    finally:
        for sender in mqtt:
            sender.close()
        for h in http:
            await h.close()
        await server.stop()


async def test_postgresql_restart_mid_stream_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    database = PostgresServer()  # a private one: this test stops it
    server: ServerProcess | None = None
    senders: list[HttpSender] = []
    try:
        url = database.start()
        server = ServerProcess(tmp_path, database_url=url, log_level="info")
        devices = await provision(url, 5)
        ledger = Ledger()
        await server.start()
        senders = [HttpSender(d, ledger, server.base) for d in devices]
        streaming, late = senders[:4], senders[4]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(s.run(stop, finish=True)) for s in streaming]
        await wait_until(lambda: all(len(ledger.acked[s.device.id]) >= 100 for s in streaming))

        database.halt("fast")
        async with local_client(base_url=server.base) as http:
            ready = await http.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "NOT_READY"
        assert ready.json()["error"]["details"]["checks"]["database"] != "ok"
        refused = sum(s.statuses[503] for s in streaming)
        await wait_until(lambda: sum(s.statuses[503] for s in streaming) > refused + 4)
        # A device not seen before: its token is looked up in the database, which is down.
        first = ledger.new(late.device.id, 10)
        assert await late.send(first) is not None
        assert late.statuses == {503: 1}, late.problems

        database.resume()
        resumed = ledger.acked_count
        await wait_until(lambda: ledger.acked_count > resumed + 400, within=60)
        await late.resend(first)
        stop.set()
        await asyncio.gather(*tasks)  # each device retries its last batch until stored
        assert await server.ready()
        check_storage(await read_storage(url), ledger, complete=True)
        assert not [p for s in senders for p in s.problems]
        assert set().union(*(s.statuses for s in senders)) <= {200, 503}

        database.halt("fast")  # a stop while the database is down still stops everything
        await server.stop()
        assert "stopped" in server.events(), server.log_tail()
    finally:
        for sender in senders:
            await sender.close()
        if server is not None:
            await server.stop()
        database.stop()


async def test_an_unreachable_postgresql_is_an_operational_error() -> None:
    # asyncpg raises a bare ConnectionRefusedError, which the app answered with 500.
    database = Database.from_url(f"postgresql+asyncpg://fleetcore@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(OperationalError, match="cannot connect"):
            await database.ping()
    finally:
        await database.close()


async def test_a_connection_ended_by_the_server_is_an_operational_error(
    postgres_server: PostgresServer | None,
) -> None:
    # asyncpg's AdminShutdownError (57P01) became a generic DBAPIError, answered with 500.
    assert postgres_server is not None
    database = Database.from_url(postgres_server.url("fleetcore_test"), pool_size=2)
    try:
        async with database.connect() as victim, database.connect() as admin:
            pid = await victim.scalar(text("SELECT pg_backend_pid()"))
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(OperationalError) as caught:
                await victim.execute(text("SELECT 1"))
            assert caught.value.connection_invalidated  # the pool drops it and reconnects
        await database.ping()
    finally:
        await database.close()


async def test_sqlite_disk_full_refuses_clearly_and_recovers_when_space_returns(
    tmp_path: Path,
) -> None:
    with small_filesystem(tmp_path / "small", size_mb=8) as small:
        server = ServerProcess(tmp_path, data_dir=small)
        database = small / "fleetcore.db"
        devices = await provision(server.database_url, 3)
        ledger = Ledger()
        mqtt: list[MqttSender] = []
        http = [HttpSender(d, ledger, server.base) for d in devices[1:]]
        try:
            await server.start()
            mqtt = [MqttSender(devices[0], ledger, server.mqtt_port)]
            await mqtt[0].connect()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(h.run(stop, finish=True)) for h in http]
            tasks.append(asyncio.create_task(mqtt[0].run(stop)))
            await wait_until(lambda: all(len(ledger.acked[d.id]) >= 200 for d in devices))

            fill(small / "filler")
            # Refused, every way: HTTP 503/507 with the envelope; no PUBACK (the broker ends
            # the connection so the device sends again).
            # (Until SQLite must grow a file: a checkpointed WAL is written over first.)
            # A full disk is 507 (Insufficient Storage), not a retry-soon 503.
            await wait_until(lambda: all(h.statuses[507] >= 2 for h in http), within=60)
            await wait_until(lambda: not mqtt[0].connected, within=60)
            assert await server.healthy()
            assert integrity(database) == "ok"

            (small / "filler").unlink()  # space returns: ingest works again, same process
            recovered = ledger.acked_count
            await wait_until(lambda: ledger.acked_count > recovered + 400, within=30)
            stop.set()
            await asyncio.gather(*tasks)
            mqtt.append(MqttSender(devices[0], ledger, server.mqtt_port))
            await mqtt[-1].connect()
            await mqtt[-1].resend(ledger.unacked(devices[0].id))
            check_storage(await read_storage(server.database_url), ledger, complete=True)
            assert not [p for h in http for p in h.problems]
            assert set().union(*(h.statuses for h in http)) <= {200, 503, 507}
            assert not mqtt[-1].refused
        finally:
            for sender in mqtt:
                sender.close()
            for h in http:
                await h.close()
            await server.stop()
        assert integrity(database) == "ok"


QUEUE_DEPTH = "fleetcore_telemetry_queue_depth"


async def test_a_slow_database_gets_backpressure_not_memory_growth(
    tmp_path: Path, postgres_server: PostgresServer | None
) -> None:
    assert postgres_server is not None
    url = postgres_server.create_database(f"faults_slow_{uuid.uuid4().hex[:8]}")
    proxy = LatencyProxy(postgres_server.port)
    await proxy.start()
    max_pending = 1_000
    server = ServerProcess(
        tmp_path,
        database_url=url.replace(f":{postgres_server.port}/", f":{proxy.port}/"),
        ingest_max_pending=str(max_pending),
        db_pool_size="2",  # few connections: token look-ups of waiting requests fill them
    )
    ledger = Ledger()
    senders: list[HttpSender] = []
    try:
        devices = await provision(url, 20)
        # 100 clients, each retrying 500 readings: 50 times what the pipeline may hold.
        senders = [HttpSender(devices[i % 20], ledger, server.base, batch=500) for i in range(100)]
        await server.start()
        for sender in senders[:20]:  # tokens and series known, connections made
            await sender.resend(ledger.new(sender.device.id, 100))
        baseline = server.rss()
        proxy.delay_s = 0.1  # per packet, each way
        stop = asyncio.Event()
        flood = [asyncio.create_task(s.run(stop)) for s in senders]  # a 503: the same again
        peak_rss, peak_depth, before = baseline, 0.0, ledger.acked_count

        async def ingesting_under_pressure() -> bool:
            nonlocal peak_rss, peak_depth
            peak_rss = max(peak_rss, server.rss())
            peak_depth = max(peak_depth, await server.metric(QUEUE_DEPTH))
            # The writer keeps committing, however many requests wait for the database.
            return ledger.acked_count >= before + 4_000

        await wait_until(ingesting_under_pressure, within=60, every=0.2)
        assert peak_depth <= max_pending
        assert peak_rss - baseline < 48 * 2**20, (baseline, peak_rss)
        proxy.delay_s = 0.0  # so the requests still waiting end soon
        stop.set()
        await asyncio.gather(*flood)
        statuses = sum((s.statuses for s in senders), Counter[int]())
        assert set(statuses) == {200, 503}, statuses
        assert not [p for s in senders for p in s.problems]  # each 503 with Retry-After
        check_storage(await read_storage(url), ledger, complete=False)
    finally:
        for sender in senders:
            await sender.close()
        await server.stop()
        await proxy.stop()


async def test_a_database_that_stops_answering_gets_503_at_once_and_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer | None
) -> None:
    assert postgres_server is not None
    url = postgres_server.create_database(f"faults_hung_{uuid.uuid4().hex[:8]}")
    proxy = LatencyProxy(postgres_server.port)
    await proxy.start()
    server = ServerProcess(
        tmp_path,
        database_url=url.replace(f":{postgres_server.port}/", f":{proxy.port}/"),
        ingest_max_pending="100",
    )
    ledger = Ledger()
    senders: list[HttpSender] = []
    try:
        first, fresh = await provision(url, 2)
        senders = [HttpSender(d, ledger, server.base, timeout_s=10) for d in (first, fresh)]
        await server.start()
        for _ in range(2):  # the first use activates the device and so clears the cache
            await senders[0].resend(ledger.new(first.id, 10))
        proxy.hold()  # connections stay open, nothing comes back
        held = asyncio.create_task(senders[0].send(ledger.new(first.id, 100)))

        async def full() -> bool:
            return await server.metric(QUEUE_DEPTH) == 100

        await wait_until(full)

        # A device whose token is not cached is refused before anything waits on the
        # database (its token look-up would hang like the write).
        late = ledger.new(fresh.id, 10)
        assert await senders[1].send(late) is not None
        assert senders[1].codes == {"INGEST_OVERLOADED": 1}, senders[1].problems
        async with local_client(base_url=server.base) as http:
            ready = await http.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["error"]["details"]["checks"]["database"].startswith("timed out")

        proxy.release()
        assert await held is None  # acknowledged once the database answers
        await senders[1].resend(late)
        check_storage(await read_storage(url), ledger, complete=True)
        assert not [p for s in senders for p in s.problems]
    finally:
        for sender in senders:
            await sender.close()
        await server.stop()
        await proxy.stop()


async def test_an_mqtt_client_is_read_no_further_while_its_messages_wait_for_the_database(
    tmp_path: Path, postgres_server: PostgresServer | None
) -> None:
    # Every message read while the pipeline was full used to wait in a task of its own:
    # a client sending QoS 1 without waiting for PUBACKs grew the server's memory without
    # bound (about 2.4 KB a message) while the database hung.
    assert postgres_server is not None
    url = postgres_server.create_database(f"faults_mqtt_{uuid.uuid4().hex[:8]}")
    proxy = LatencyProxy(postgres_server.port)
    await proxy.start()
    server = ServerProcess(
        tmp_path,
        database_url=url.replace(f":{postgres_server.port}/", f":{proxy.port}/"),
        ingest_max_pending="100",
    )
    ledger = Ledger()
    client: RawClient | None = None
    try:
        (device,) = await provision(url, 1)
        await server.start()
        client = await RawClient.connected(server.mqtt_port, "flood", username=device.token)
        warm = ledger.new(device.id, 1)
        await client.publish(TOPIC, ledger.payload(warm), qos=1)
        ledger.ack(device.id, warm)
        proxy.hold()
        flood = ledger.new(device.id, 5 * MAX_UNSTORED)
        await client.send(
            b"".join(
                publish_packet(TOPIC, ledger.payload([seq]), qos=1, packet_id=n)
                for n, seq in enumerate(flood, start=1)
            )
            + packet(PINGREQ, 0, b"")
        )
        proxy.release()
        # The server reads the PINGREQ only once all but MAX_UNSTORED of the messages sent
        # before it are stored (without a bound it answers at once, none stored yet).
        acked: list[int] = []
        while (answer := await client.read(wait_s=30)).kind != PINGRESP:
            assert answer.kind == PUBACK
            acked.append(answer.packet_id)
        assert len(acked) >= len(flood) - MAX_UNSTORED
        while len(acked) < len(flood):
            acked.append((await client.expect(PUBACK, wait_s=30)).packet_id)
        assert sorted(acked) == list(range(1, len(flood) + 1))
        ledger.ack(device.id, flood)
        check_storage(await read_storage(url), ledger, complete=True)
    finally:
        if client is not None:
            await client.close()
        await server.stop()
        await proxy.stop()


async def test_a_client_leaving_mid_body_is_no_server_error(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    """A device that drops its connection halfway through a body is counted as 499 (the
    client closed the request), not logged as an unhandled error, and stores nothing."""
    device_id, token = await new_device(live_client, live_tenant)
    route = "/api/v1/devices/me/telemetry"

    def count(status: str) -> float:
        labels = {"method": "POST", "route": route, "status": status}
        return REGISTRY.get_sample_value("fleetcore_http_requests_total", labels) or 0.0

    before_499, before_500 = count("499"), count("500")
    async with serving(live_app) as address:
        host, port = address.split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {route} HTTP/1.1\r\nHost: {address}\r\nX-Device-Token: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"t": 1'
        )
        await writer.drain()
        writer.close()
        await wait_until(lambda: count("499") > before_499)
    assert count("500") == before_500
    latest = await live_client.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=live_tenant.headers()
    )
    assert latest.json()["values"] == {}
