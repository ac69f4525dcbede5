"""Faults against real processes, with zero-loss books: every reading the platform
acknowledged (HTTP 2xx, MQTT PUBACK) is stored exactly once whatever happens to the
server, its database or its disk, and readings sent again by their devices are absorbed."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from fleetcore.db import Database
from tests.support.faults import ServerProcess, provision, read_storage
from tests.support.postgres import PostgresServer, free_port
from tests.support.senders import HttpSender, Ledger, MqttSender, check_storage
from tests.support.wait import wait_until


def _database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, name: str
) -> str | None:
    """None for SQLite (the server's data dir); a fresh database on the shared PostgreSQL."""
    if backend == "sqlite":
        return None
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    assert server is not None, "the fault tests need the throwaway PostgreSQL server"
    return server.create_database(f"{name}_{uuid.uuid4().hex[:8]}")


async def test_sigkill_mid_ingest_loses_nothing_acknowledged(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    server = ServerProcess(
        tmp_path, database_url=_database_url(backend, tmp_path, request, "faults_kill")
    )
    devices = await provision(server.database_url, 8)
    ledger = Ledger()
    await server.start()
    mqtt: list[MqttSender] = []
    http = [HttpSender(d, ledger, server.base) for d in devices[4:]]
    try:
        mqtt = [MqttSender(d, ledger, server.mqtt_port) for d in devices[:4]]
        await asyncio.gather(*(m.connect() for m in mqtt))
        stop = asyncio.Event()
        senders = [asyncio.create_task(s.run(stop)) for s in (*mqtt, *http)]

        def every_device_acknowledged(at_least: int) -> bool:
            return all(len(ledger.acked[d.id]) >= at_least for d in devices)

        await wait_until(lambda: every_device_acknowledged(200), within=60)
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
        server.stop()


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
        async with httpx.AsyncClient(base_url=server.base) as http:
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
        server.stop()
        assert "stopped" in server.events(), server.log_tail()
    finally:
        for sender in senders:
            await sender.close()
        if server is not None:
            server.stop()
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
