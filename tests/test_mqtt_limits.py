"""What one MQTT client may cost the server (issue 14, finding 1), over real sockets.

The app runs its embedded broker with small limits set through its settings, and raw
clients (tests/support/mqtt_raw.py) or paho play the attacker and the honest device. The
broker tests share one migrated SQLite database: the limits do not depend on it. Pruning
dead letters runs on both databases; a last test runs `fleetcore serve` under a
512-descriptor limit, as the review did, and floods it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select

from fleetcore import migrate
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.deadletters.models import DeadLetter
from fleetcore.deadletters.sink import DeadLetterSink
from fleetcore.housekeeping.job import JOB_NAME, run_housekeeping
from fleetcore.mqtt.limits import MqttLimits, descriptor_budget, packet_size
from tests.conftest import client_for, make_settings, running_app
from tests.support.brokers import running
from tests.support.devices import new_device, port_of
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.mqtt_raw import (
    CONNACK,
    DISCONNECT,
    PUBLISH,
    RawClient,
    connect_packet,
    varint,
)
from tests.support.paho_device import PahoDevice
from tests.support.postgres import free_port
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until

SERVER_UNAVAILABLE = 3  # MQTT 3.1.1 CONNACK


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _refused(reason: str) -> float:
    return _metric("fleetcore_mqtt_connections_refused_total", reason=reason)


def _closed(reason: str) -> float:
    return _metric("fleetcore_mqtt_connections_closed_total", reason=reason)


@pytest.fixture(scope="module")
async def sqlite_database(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    path = tmp_path_factory.mktemp("mqtt-limits") / "fleetcore.db"
    database = Database.from_url(f"sqlite+aiosqlite:///{path}", pool_size=5)
    await migrate.upgrade(database)
    try:
        yield database
    finally:
        await database.close()


@asynccontextmanager
async def broker_app(
    database: Database, tmp_path: Path, **settings: object
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Tenant]]:
    """The app with its broker on a free port and these settings; an organization in it."""
    async with (
        running_app(database, tmp_path, mqtt_port=free_port(), **settings) as app,
        client_for(app) as http,
    ):
        try:
            yield app, http, await make_tenant(http, database)
        finally:
            await RawClient.close_all()


async def _open(port: int, source: str = "127.0.0.1") -> RawClient:
    """A TCP connection from a given loopback address (Linux routes all of 127/8 locally)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return RawClient(reader, writer)


async def _connack(client: RawClient, connect: bytes) -> int | None:
    """Send a CONNECT; the CONNACK code, or None if the server closed without one."""
    try:
        await client.send(connect)
        answer = await client.read()
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    assert answer.kind == CONNACK, answer
    return answer.body[1]


def _connect5(client_id: str, username: str, *, keepalive: int = 60) -> bytes:
    """An MQTT 5 CONNECT with a username, clean start and no properties."""
    header = _string("MQTT") + bytes([5, 0x82]) + struct.pack("!H", keepalive) + b"\x00"
    body = header + _string(client_id) + _string(username)
    return b"\x10" + varint(len(body)) + body


def _string(text: str) -> bytes:
    return struct.pack("!H", len(text)) + text.encode()


# -- the policy itself -------------------------------------------------------------------


def test_limits_follow_the_descriptor_limit_and_cap_keep_alive(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, mqtt_max_connections=5000, mqtt_max_keepalive_s=600)
    assert descriptor_budget(1024) == 768
    assert MqttLimits.from_settings(settings, open_files=1024).max_connections == 768
    assert MqttLimits.from_settings(settings, open_files=1_000_000).max_connections == 5000
    limits = MqttLimits.from_settings(settings, open_files=1_000_000)
    assert [limits.keep_alive(k) for k in (0, 30, 600, 601, 65535)] == [600, 30, 600, 600, 600]
    assert [packet_size(n) for n in (0, 127, 128, 16_383, 16_384)] == [2, 129, 131, 16_386, 16_388]


def test_keep_alive_is_held_between_the_minimum_and_the_maximum() -> None:
    limits = MqttLimits(min_keepalive_s=10, max_keepalive_s=600)
    assert [limits.keep_alive(k) for k in (0, 1, 9, 10, 11, 601)] == [600, 10, 10, 10, 11, 600]
    # A maximum configured below the minimum wins: the idle limit is the firmer promise.
    assert MqttLimits(min_keepalive_s=10, max_keepalive_s=3).keep_alive(1) == 3


# -- connections: in all, in their CONNECT phase, per address ------------------------------


async def test_connections_per_address_and_per_listener_are_capped(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database,
        tmp_path,
        mqtt_max_connections_per_address=2,
        mqtt_listener_max_connections={"default": 3},
    ) as (app, http, org):
        port, gate = port_of(app), app.state.transport.broker.gate
        _, token = await new_device(http, org)
        # Authenticated connections count for their address too, not only pending ones.
        first = await RawClient.connected(port, "a1", username=token)
        idle = await _open(port)
        await wait_until(lambda: gate.open_from("127.0.0.1") == 2)
        before = _refused("too_many_from_address")
        third = await _open(port)
        assert await third.closed_by_peer(wait_s=3)
        assert _refused("too_many_from_address") - before == 1
        # Another address still gets in, up to the listener's cap of three.
        other = await _open(port, "127.0.0.2")
        assert await _connack(other, connect_packet("b1", username=token)) == 0
        before = _refused("too_many_on_listener")
        fourth = await _open(port, "127.0.0.3")
        assert await fourth.closed_by_peer(wait_s=3)
        assert _refused("too_many_on_listener") - before == 1
        # A place freed is a place again.
        await idle.close()
        await wait_until(lambda: gate.open_from("127.0.0.1") == 1)
        assert await _connack(await _open(port), connect_packet("a2", username=token)) == 0
        await first.publish("v1/devices/me/telemetry", b'{"still": 1}', qos=1)


async def test_a_short_keep_alive_is_raised_to_the_minimum_and_mqtt5_is_told(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(sqlite_database, tmp_path, mqtt_min_keepalive_s=7) as (app, http, org):
        port = port_of(app)
        _, token = await new_device(http, org)
        v5 = await RawClient.open(port)
        await v5.send(_connect5("short-ka", token, keepalive=1))
        answer = await v5.read()
        assert answer.kind == CONNACK, answer
        assert answer.body[1] == 0
        # Server Keep Alive (property 0x13) says 7 s, the minimum, instead of the 1 s asked.
        assert b"\x13\x00\x07" in answer.body[2:]
        kept = await RawClient.open(port)
        await kept.send(_connect5("ok-ka", token, keepalive=60))
        assert b"\x13" not in (await kept.read()).body[2:]  # a keep-alive in range is not echoed


async def test_connections_over_the_limits_are_closed_at_once(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database,
        tmp_path,
        mqtt_max_connections=6,
        mqtt_max_pending=4,
        mqtt_max_pending_per_address=2,
    ) as (app, http, org):
        port, gate = port_of(app), app.state.transport.broker.gate
        _, token = await new_device(http, org)
        idle = [await _open(port), await _open(port)]  # never send a CONNECT
        await wait_until(lambda: gate.pending == 2)
        before = _refused("too_many_pending_from_address")
        third = await _open(port)
        assert await third.closed_by_peer(wait_s=3)
        assert _refused("too_many_pending_from_address") - before == 1
        # Another address still gets in, and so does a real device from it.
        device = await _open(port, "127.0.0.2")
        assert await _connack(device, connect_packet("d0", username=token)) == 0
        idle += [await _open(port, "127.0.0.3"), await _open(port, "127.0.0.3")]
        await wait_until(lambda: gate.pending == 4)
        before = _refused("too_many_pending")
        fifth = await _open(port, "127.0.0.4")
        assert await fifth.closed_by_peer(wait_s=3)
        assert _refused("too_many_pending") - before == 1
        assert (await http.get("/health")).status_code == 200

        for client in idle:
            await client.close()
        await wait_until(lambda: gate.pending == 0)
        devices = [await RawClient.connected(port, f"d{i}", username=token) for i in range(1, 6)]
        assert gate.total == 6
        before = _refused("too_many_connections")
        seventh = await _open(port)
        assert await seventh.closed_by_peer(wait_s=3)
        assert _refused("too_many_connections") - before == 1
        await devices[0].publish("v1/devices/me/telemetry", b'{"still": 1}', qos=1)
        await devices[0].disconnect()
        await wait_until(lambda: gate.total == 5)
        assert await _connack(await _open(port), connect_packet("d6", username=token)) == 0


async def test_idle_provision_connections_beyond_the_limit_are_refused(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database,
        tmp_path,
        mqtt_max_provisioning_sessions=5,
        mqtt_provisioning_burst=1000,
    ) as (app, http, org):
        port = port_of(app)
        before = _refused("too_many_provisioning")
        clients = [await _open(port) for _ in range(40)]
        codes = await asyncio.gather(
            *(
                _connack(c, connect_packet(f"p{i}", username="provision"))
                for i, c in enumerate(clients)
            )
        )
        assert (codes.count(0), codes.count(SERVER_UNAVAILABLE)) == (5, 35)
        assert _refused("too_many_provisioning") - before == 35
        refused = [c for c, code in zip(clients, codes, strict=True) if code]
        assert all(await asyncio.gather(*(c.closed_by_peer(wait_s=3) for c in refused)))
        # The five stay (until their lifetime ends); a real device still connects and is heard.
        device_id, token = await new_device(http, org)
        device = await RawClient.connected(port, "real", username=token)
        await device.publish(f"devices/{device_id}/telemetry", b'{"t": 1}', qos=1)
        assert (await http.get("/health")).status_code == 200


async def test_tls_handshakes_are_counted_and_have_the_connect_deadline(
    sqlite_database: Database, tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run([*request, *subject], check=True, capture_output=True)
    tls_port = free_port()
    async with broker_app(
        sqlite_database,
        tmp_path,
        mqtt_tls_port=tls_port,
        mqtt_tls_cert=cert,
        mqtt_tls_key=key,
        mqtt_connect_timeout_s=1,
        mqtt_max_pending_per_address=2,
    ) as (app, http, org):
        gate = app.state.transport.broker.gate
        before = _refused("connect_timeout")
        mute = [await _open(tls_port), await _open(tls_port)]  # TCP only, no handshake
        await wait_until(lambda: gate.pending == 2)
        assert await (await _open(tls_port)).closed_by_peer(wait_s=3)  # a third: refused
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", tls_port, ssl=context, local_addr=("127.0.0.2", 0)
        )
        _, token = await new_device(http, org)
        assert await _connack(RawClient(reader, writer), connect_packet("tls", username=token)) == 0
        assert all([await client.closed_by_peer(wait_s=10) for client in mute])
        assert _refused("connect_timeout") - before == 2
        await wait_until(lambda: gate.pending == 0)  # and their places are given back


async def test_a_client_gone_before_its_connack_leaves_nothing_behind(tmp_path: Path) -> None:
    async with running("fleet", free_port()) as fleet:
        before = _metric("fleetcore_mqtt_connections_admitted_total")
        body = _string("MQTT") + bytes([5, 0xC2]) + struct.pack("!H", 60) + b"\x00"
        for i in range(20):  # MQTT 5 CONNECTs, each connection reset as soon as it is sent
            credentials = _string(f"gone-{i}") + _string("dev1") + _string("pw1")
            with socket.create_connection(("127.0.0.1", fleet.port)) as sock:
                sock.sendall(b"\x10" + varint(len(body + credentials)) + body + credentials)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Every one was accepted and has ended; none is left "connected".
        await wait_until(
            lambda: (
                _metric("fleetcore_mqtt_connections_admitted_total") - before == 20
                and fleet.broker.gate.total == 0
            )
        )
        assert fleet.broker.connected_keys() == set()


# -- the CONNECT: its deadline and its size --------------------------------------------------


async def test_a_client_that_never_sends_connect_is_dropped_after_the_deadline(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(sqlite_database, tmp_path, mqtt_connect_timeout_s=0.5) as (app, _, _):
        before = _refused("connect_timeout")
        silent = await RawClient.open(port_of(app))
        slow = await RawClient.open(port_of(app))
        await slow.send(b"\x10\x20\x00\x04MQ")  # a CONNECT that never finishes
        assert await silent.closed_by_peer(wait_s=5)
        assert await slow.closed_by_peer(wait_s=5)
        assert _refused("connect_timeout") - before == 2


async def test_a_connect_declaring_256_mib_is_closed_unread(
    sqlite_database: Database, tmp_path: Path
) -> None:
    # The default settings: a 10 s CONNECT deadline, 8 KiB CONNECT. The answer must come
    # from the fixed header, long before the deadline, with the body never read.
    async with broker_app(sqlite_database, tmp_path) as (app, http, org):
        port = port_of(app)
        before = _refused("connect_too_large")
        huge = await RawClient.open(port)
        await huge.send(b"\x10" + varint(256 * 1024 * 1024 - 1) + b"\x00\x04MQTT\x04\x02")
        assert await huge.closed_by_peer(wait_s=3)
        assert _refused("connect_too_large") - before == 1
        # A CONNECT within the limit, even with a 6 KiB will, is served as before; one with a
        # 9 KiB will is over "a few KiB" and refused the same way.
        _, token = await new_device(http, org)
        will = ("v1/devices/me/telemetry", b"w" * 6 * 1024, 1, False)
        await RawClient.connected(port, "big-will", username=token, will=will)
        over = await RawClient.open(port)
        will = ("v1/devices/me/telemetry", b"w" * 9 * 1024, 1, False)
        await over.send(connect_packet("too-big-will", username=token, will=will))
        assert await over.closed_by_peer(wait_s=3)
        assert _refused("connect_too_large") - before == 2


# -- after the CONNECT: packet size and keep-alive -------------------------------------------


async def test_packets_over_the_limit_close_the_connection_unread(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database, tmp_path, mqtt_max_packet_bytes=4096, mqtt_max_keepalive_s=5
    ) as (app, http, org):
        port = port_of(app)
        device_id, token = await new_device(http, org)
        before = _closed("packet_too_large")
        v311 = await RawClient.connected(port, "big-311", username=token)
        await v311.publish(f"devices/{device_id}/telemetry", b'{"t": 1}', qos=1)  # small: fine
        await v311.send(b"\x32" + varint(10 * 1024 * 1024) + b"\x00\x01t")
        assert await v311.closed_by_peer(wait_s=3)
        v5 = await RawClient.open(port)
        assert await _connack(v5, _connect5("big-5", token)) == 0
        await v5.send(b"\x32" + varint(4096))
        goodbye = await v5.read()
        assert (goodbye.kind, goodbye.body[:1]) == (DISCONNECT, b"\x95")  # packet too large
        assert await v5.closed_by_peer(wait_s=3)
        assert _closed("packet_too_large") - before == 2
        # MQTT 5 clients are told both limits in the CONNACK.
        paho = PahoDevice("told")
        try:
            connected = await paho.connect(port, username=token)  # asks for keep-alive 30
            properties = connected.data["properties"]
            assert (properties.MaximumPacketSize, properties.ServerKeepAlive) == (4096, 5)
        finally:
            paho.stop()


async def test_keep_alive_zero_is_dropped_after_the_max_idle(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(sqlite_database, tmp_path, mqtt_max_keepalive_s=1) as (app, http, org):
        port = port_of(app)
        _, token = await new_device(http, org)
        before = _closed("keepalive")
        forever = await RawClient.connected(port, "ka0", username=token, keepalive=0)
        v5 = await RawClient.open(port)
        assert await _connack(v5, _connect5("ka0-5", token, keepalive=0)) == 0
        assert await forever.closed_by_peer(wait_s=10)
        goodbye = await v5.read(wait_s=10)
        assert (goodbye.kind, goodbye.body[:1]) == (DISCONNECT, b"\x8d")  # keep alive timeout
        assert _closed("keepalive") - before == 2


# -- provisioning ---------------------------------------------------------------------------


async def _provisioning_profile(http: httpx.AsyncClient, org: Tenant) -> dict[str, str]:
    response = await http.post(
        "/api/v1/device-profiles",
        headers=org.headers(Role.ADMIN),
        json={"name": f"prov-{uuid.uuid4().hex[:8]}", "provisioning_enabled": True},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return {
        "provisionDeviceKey": body["provision_key"],
        "provisionDeviceSecret": body["provision_secret"],
    }


async def test_provisioning_rate_per_address_refuses_the_next_in_the_window(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database,
        tmp_path,
        mqtt_provisioning_burst=3,
        mqtt_provisioning_rate_per_min=0.01,  # nothing comes back during the test
    ) as (app, http, org):
        port = port_of(app)
        keys = await _provisioning_profile(http, org)
        client = await RawClient.connected(port, "prov", username="provision")  # token 1
        assert await client.subscribe("/provision/response") == [1]
        for serial in ("SN-RATE-1", "SN-RATE-2"):  # tokens 2 and 3: provisioned as before
            request = orjson.dumps({"deviceName": serial, **keys})
            await client.publish("/provision/request", request, qos=1)
            answer = orjson.loads((await client.expect(PUBLISH)).payload)
            assert answer["status"] == "SUCCESS", answer
        request = orjson.dumps({"deviceName": "SN-RATE-3", **keys})
        await client.publish("/provision/request", request, qos=1)
        answer = orjson.loads((await client.expect(PUBLISH)).payload)
        assert answer == {"status": "FAILURE", "errorMsg": "too many provisioning requests"}
        before = _refused("provisioning_rate")
        again = await _open(port)
        assert await _connack(again, connect_packet("again", username="provision")) == 3
        assert _refused("provisioning_rate") - before == 1
        elsewhere = await _open(port, "127.0.0.2")
        assert await _connack(elsewhere, connect_packet("other", username="provision")) == 0
        devices = await http.get("/api/v1/devices", headers=org.headers(), params={"limit": 100})
        serials = {d["serial_number"] for d in devices.json()["items"]}
        assert {"SN-RATE-1", "SN-RATE-2"} <= serials
        assert "SN-RATE-3" not in serials


async def test_a_provisioning_session_ends_after_its_lifetime(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(sqlite_database, tmp_path, mqtt_provisioning_session_s=1) as (
        app,
        _,
        _,
    ):
        port = port_of(app)
        before = _closed("lifetime")
        v311 = await RawClient.connected(port, "linger", username="provision")
        v5 = await RawClient.open(port)
        assert await _connack(v5, _connect5("linger-5", "provision")) == 0
        assert await v311.closed_by_peer(wait_s=10)
        goodbye = await v5.read(wait_s=10)
        assert (goodbye.kind, goodbye.body[:1]) == (DISCONNECT, b"\xa0")  # maximum connect time
        assert _closed("lifetime") - before == 2
        gate = app.state.transport.broker.gate
        await wait_until(lambda: gate.provisional == 0)


# -- dead letters: stored at a rate per sender, pruned by age and count ----------------------


async def test_dead_letters_over_the_rate_are_counted_not_written(
    sqlite_database: Database, tmp_path: Path
) -> None:
    async with broker_app(
        sqlite_database, tmp_path, dead_letters_burst=3, dead_letters_rate_per_s=0.001
    ) as (app, http, org):
        port = port_of(app)
        device_id, token = await new_device(http, org)
        suppressed = _metric(
            "fleetcore_dead_letters_suppressed_total", transport="mqtt", reason="unknown_topic"
        )
        counted = _metric("fleetcore_dead_letters_total", transport="mqtt", reason="unknown_topic")
        device = await RawClient.connected(port, "noisy", username=token)
        for i in range(10):
            await device.publish(f"devices/{device_id}/nowhere", b"%d" % i, qos=1)
        anonymous = await RawClient.connected(port, "noisy-prov", username="provision")
        nowhere = f"nowhere/{uuid.uuid4().hex}"
        for i in range(10):
            await anonymous.publish(nowhere, b"%d" % i, qos=1)
        sink: DeadLetterSink = app.state.dead_letters
        await sink.flush()
        async with sqlite_database.session() as session:
            mine = await session.scalar(
                select(func.count()).where(DeadLetter.device_id == uuid.UUID(device_id))
            )
            nobodys = await session.scalar(
                select(func.count()).where(
                    DeadLetter.organization_id.is_(None), DeadLetter.topic == nowhere
                )
            )
        assert mine == 3
        assert nobodys == 3
        assert (
            _metric("fleetcore_dead_letters_total", transport="mqtt", reason="unknown_topic")
            - counted
            == 10
        )
        after = _metric(
            "fleetcore_dead_letters_suppressed_total", transport="mqtt", reason="unknown_topic"
        )
        assert after - suppressed == 7


async def _add_letters(db: Database, ages_days: list[float]) -> None:
    now = utcnow()
    rows = [
        {
            "organization_id": None,
            "device_id": None,
            "transport": "mqtt",
            "topic": "t",
            "reason": "bad_json",
            "detail": f"{age}",
            "payload_excerpt": "",
            "payload_size": 0,
            "received_at": now - timedelta(days=age),
        }
        for age in ages_days
    ]
    async with db.session() as session:
        await session.execute(insert(DeadLetter), rows)
        await session.commit()


async def _details(db: Database) -> list[str]:
    async with db.session() as session:
        return list(
            (await session.scalars(select(DeadLetter.detail).order_by(DeadLetter.id))).all()
        )


async def test_pruning_deletes_old_dead_letters_then_all_but_the_newest(
    db: Database, tmp_path: Path
) -> None:
    await _add_letters(db, [45, 40, 35, 31, 31, 2, 1, 0.5, 0.1])

    async def prune(retention_days: int, max_rows: int, chunk_rows: int = 5000) -> int:
        settings = make_settings(
            tmp_path,
            dead_letters_retention_days=retention_days,
            dead_letters_max_rows=max_rows,
            housekeeping_chunk_rows=chunk_rows,
        )
        return (await run_housekeeping(db, settings)).rows_deleted.get("dead_letters", 0)

    assert await prune(retention_days=30, max_rows=0, chunk_rows=2) == 5
    assert await _details(db) == ["2", "1", "0.5", "0.1"]
    assert await prune(retention_days=30, max_rows=0) == 0
    assert await prune(retention_days=0, max_rows=3) == 1
    assert await _details(db) == ["1", "0.5", "0.1"]
    # The app runs it as the housekeeping job, with its settings.
    async with running_app(db, tmp_path, dead_letters_max_rows=1) as app:
        assert JOB_NAME in app.state.jobs.names
        await app.state.jobs.run_once(JOB_NAME)
    assert await _details(db) == ["0.1"]


# -- the review's attack on a real process --------------------------------------------------


async def test_health_answers_while_provision_connections_flood_512_descriptors(
    tmp_path: Path,
) -> None:
    port, mqtt_port = free_port(), free_port()
    env = fleetcore_env(FLEETCORE_DATA_DIR=str(tmp_path), FLEETCORE_LOG_LEVEL="warning")
    command = ["prlimit", "--nofile=512:512", FLEETCORE, "serve", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--mqtt-port", str(mqtt_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with local_client(base_url=base, timeout=5) as http:

            async def healthy() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await http.get("/health")).status_code == 200
                assert process.poll() is None, "serve exited"
                return False

            await wait_until(healthy, within=60, every=0.2)
            codes: list[int | None] = []
            # Bounded: before the fix, connects beyond the descriptors wait in the backlog.
            async with asyncio.timeout(60):
                for batch in range(6):  # 600 connections as "provision", held open
                    opened = await asyncio.gather(*(RawClient.open(mqtt_port) for _ in range(100)))
                    codes += await asyncio.gather(
                        *(
                            _connack(c, connect_packet(f"f{batch}-{i}", username="provision"))
                            for i, c in enumerate(opened)
                        )
                    )
            # At most the default 32 provisional sessions stay (one address's burst of 30
            # provisioning connects comes first); every other one was refused.
            assert 0 < codes.count(0) <= 32
            assert codes.count(0) + codes.count(SERVER_UNAVAILABLE) + codes.count(None) == 600
            # A new HTTP connection, as any other tenant's client would open: the one kept
            # alive since start-up would not need a descriptor.
            async with local_client(timeout=5) as fresh:
                assert (await fresh.get(f"{base}/health")).status_code == 200
            await RawClient.close_all()
            # Four CONNECTs declaring 256 MiB, sent as fast as the server takes them: closed
            # at the header, so the server's memory does not grow by what they send.
            before = _rss_mib(process.pid)
            sent = await asyncio.gather(*(_send_huge_connect(mqtt_port) for _ in range(4)))
            assert all(n < 32 * 1024 * 1024 for n in sent)
            assert _rss_mib(process.pid) - before < 50
    finally:
        await RawClient.close_all()
        process.terminate()
        process.wait(timeout=30)


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


async def _send_huge_connect(port: int) -> int:
    """Declare a 256 MiB CONNECT and send up to 32 MiB of it; returns the bytes sent."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x10" + varint(256 * 1024 * 1024 - 1) + b"\x00\x04MQTT\x04\x02")
    sent, chunk = 0, b"a" * (1024 * 1024)
    try:
        async with asyncio.timeout(30):
            while sent < 32 * 1024 * 1024:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
    except ConnectionError:
        pass  # closed by the server: what should happen
    finally:
        writer.close()
    return sent
