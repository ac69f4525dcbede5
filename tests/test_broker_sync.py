"""Device credentials in Mosquitto's dynamic security, kept in step through the outbox.

A real Mosquitto 2.0.11 with the dynsec plugin (tests/support/mosquitto_dynsec.py), the app on a
live database (SQLite and PostgreSQL), devices made through the API, and paho clients that
log in as the devices.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from fastapi import FastAPI
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import select

from fleetcore.auth.principal import Role
from fleetcore.broker_sync import apply
from fleetcore.broker_sync.dynsec import DynsecClient, DynsecError
from fleetcore.broker_sync.models import BrokerCredentialOutbox as Outbox
from fleetcore.db import Database
from fleetcore.devices import credential_events
from fleetcore.external_broker.connection import BrokerUrl
from tests.conftest import client_for, running_app
from tests.support import forkserver
from tests.support.devices import new_device
from tests.support.env import FLEETCORE
from tests.support.mosquitto_dynsec import DynsecMosquitto as DynsecBroker
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


class Probe:
    """A paho MQTT 5 client logging in as someone; blocking waits run in a thread."""

    def __init__(self, port: int, username: str, password: str | None) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.port = port
        self.connack: Any = None
        self.connected = threading.Event()
        self.acks: dict[int, Any] = {}
        self.acked = threading.Condition()
        self.messages: list[str] = []
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda _c, _u, m: self.messages.append(m.topic)

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.connack = reason
        self.connected.set()

    def _on_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        with self.acked:
            self.acks[mid] = reason
            self.acked.notify_all()

    async def connect(self) -> bool:
        """True if the broker accepted the login."""
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert await asyncio.to_thread(self.connected.wait, 10), "no CONNACK"
        return not self.connack.is_failure

    async def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_: done.set()
        self.client.subscribe(topic, qos=1)
        assert await asyncio.to_thread(done.wait, 10)

    async def publish(self, topic: str, payload: bytes = b"{}") -> Any:
        """The PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)

        def wait() -> Any:
            with self.acked:
                self.acked.wait_for(lambda: info.mid in self.acks, timeout=10)
                return self.acks.get(info.mid)

        reason = await asyncio.to_thread(wait)
        assert reason is not None, "no PUBACK"
        return reason

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def logs_in(broker: DynsecBroker, username: str, password: str | None) -> bool:
    probe = Probe(broker.port, username, password)
    try:
        return await probe.connect()
    finally:
        probe.close()


@pytest.fixture
def broker() -> Iterator[DynsecBroker]:
    server = DynsecBroker()
    server.start()
    yield server
    server.close()


@pytest.fixture
async def sync_app(
    live_database: Database, tmp_path: Path, broker: DynsecBroker
) -> AsyncIterator[FastAPI]:
    async with running_app(
        live_database, tmp_path, mqtt_url=broker.url, mqtt_dynsec=True
    ) as application:
        application.state.broker_sync.retry_max_s = 1.0
        yield application
    assert not credential_events.listeners  # the lifespan took its listener back


@pytest.fixture
async def api(sync_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sync_app) as http:
        yield http


@pytest.fixture
async def tenant_(api: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(api, live_database)


@pytest.fixture
async def admin(broker: DynsecBroker) -> AsyncIterator[DynsecClient]:
    """Our own dynsec connection, to look at (and tamper with) the broker's state."""
    url = BrokerUrl.parse(broker.url)
    client = DynsecClient(url.client("test"), url.host, url.port)
    await client.start()
    await client.wait_connected(10)
    yield client
    await client.stop()


async def rows(database: Database, device_id: str) -> list[Outbox]:
    async with database.session() as session:
        return list(
            (
                await session.scalars(
                    select(Outbox)
                    .where(Outbox.device_id == uuid.UUID(device_id))
                    .order_by(Outbox.id)
                )
            ).all()
        )


async def applied(database: Database, device_id: str) -> None:
    """Wait until every outbox row of the device is applied."""

    async def done() -> bool:
        found = await rows(database, device_id)
        return bool(found) and all(r.done_at is not None for r in found)

    await wait_until(done, within=20, every=0.05)


async def test_a_device_lives_its_whole_life_in_dynamic_security(
    capfd: pytest.CaptureFixture[str],
    api: httpx.AsyncClient,
    tenant_: Tenant,
    broker: DynsecBroker,
    live_database: Database,
    admin: DynsecClient,
) -> None:
    device_id, token = await new_device(api, tenant_)
    other_id, _ = await new_device(api, tenant_)
    await applied(live_database, device_id)
    (row,) = await rows(live_database, device_id)
    assert (row.action, row.secret, row.last_error) == ("upsert", None, None)

    platform = Probe(broker.port, broker.platform.username, broker.platform.password)
    assert await platform.connect()
    await platform.subscribe("devices/#")
    device = Probe(broker.port, device_id, token)
    try:
        assert await device.connect()
        refused = await device.publish(f"devices/{other_id}/telemetry", b'{"t": 1}')
        assert refused.is_failure
        assert refused.value >= 0x80
        accepted = await device.publish(f"devices/{device_id}/telemetry", b'{"t": 2}')
        assert not accepted.is_failure
        await wait_until(lambda: f"devices/{device_id}/telemetry" in platform.messages)
        # In order on one connection: the refused message would have arrived first.
        assert f"devices/{other_id}/telemetry" not in platform.messages
    finally:
        device.close()
        platform.close()
    assert not await logs_in(broker, device_id, "fcd_wrong")

    rotated = await api.post(
        f"/api/v1/devices/{device_id}/credentials/rotate", headers=tenant_.headers(Role.MANAGER)
    )
    assert rotated.status_code == 200, rotated.text
    new_token = rotated.json()["access_token"]
    await applied(live_database, device_id)
    assert not await logs_in(broker, device_id, token)
    assert await logs_in(broker, device_id, new_token)

    path = f"/api/v1/devices/{device_id}"
    headers = tenant_.headers(Role.MANAGER)
    assert (await api.patch(path, headers=headers, json={"status": "disabled"})).status_code == 200
    await applied(live_database, device_id)
    assert not await logs_in(broker, device_id, new_token)
    assert (await api.patch(path, headers=headers, json={"status": "active"})).status_code == 200
    await applied(live_database, device_id)
    assert await logs_in(broker, device_id, new_token)

    assert (await api.delete(path, headers=headers)).status_code == 204
    await applied(live_database, device_id)
    assert [r.action for r in await rows(live_database, device_id)] == [
        "upsert",
        "upsert",
        "disable",
        "enable",
        "delete",
    ]
    assert not await logs_in(broker, device_id, new_token)
    assert device_id not in await admin.list_clients()
    with pytest.raises(DynsecError, match="Role not found"):
        await admin.get_role(apply.role_name(device_id))
    assert other_id in await admin.list_clients()
    logged = capfd.readouterr()
    for secret in (token, new_token):
        assert secret not in logged.out + logged.err + broker.log()


async def test_changes_wait_for_a_broker_that_is_down_and_are_applied_when_it_is_back(
    api: httpx.AsyncClient, tenant_: Tenant, broker: DynsecBroker, live_database: Database
) -> None:
    broker.stop()
    device_id, token = await new_device(api, tenant_)

    async def failed_once() -> bool:
        (row,) = await rows(live_database, device_id)
        return row.last_error is not None and row.attempts >= 1

    await wait_until(failed_once, within=20, every=0.05)
    (row,) = await rows(live_database, device_id)
    assert row.done_at is None
    # Refused at connect, or lost mid-way if the dispatcher was connected when it stopped.
    assert re.search("not reachable|connection to the broker was lost", row.last_error or "")
    assert row.secret is not None
    assert token not in row.secret
    assert token[4:] not in row.secret

    broker.start()
    await applied(live_database, device_id)
    (row,) = await rows(live_database, device_id)
    assert row.secret is None
    assert await logs_in(broker, device_id, token)


async def test_staging_rolls_back_with_the_change(
    api: httpx.AsyncClient, tenant_: Tenant, live_database: Database
) -> None:
    serial = f"S-{uuid.uuid4().hex}"
    await new_device(api, tenant_, serial_number=serial)
    response = await api.post(
        "/api/v1/devices",
        headers=tenant_.headers(Role.MANAGER),
        json={"name": "twin", "serial_number": serial},
    )
    assert response.status_code == 409  # refused before the commit: nothing staged
    async with live_database.session() as session:
        assert len((await session.scalars(select(Outbox))).all()) == 1


async def _sync_cli(broker: DynsecBroker, database: Database, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
    env.update(
        FLEETCORE_DATABASE_URL=database.engine.url.render_as_string(hide_password=False),
        FLEETCORE_MQTT_URL=broker.url,
        FLEETCORE_MQTT_DYNSEC="true",
        FLEETCORE_AUTO_MIGRATE="false",
        FLEETCORE_LOG_LEVEL="warning",
        COLUMNS="200",
    )
    done = await asyncio.to_thread(
        forkserver.run,
        [FLEETCORE, "mqtt", "sync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout


async def test_mqtt_sync_reports_and_fixes_what_went_wrong_behind_our_back(
    api: httpx.AsyncClient,
    tenant_: Tenant,
    broker: DynsecBroker,
    live_database: Database,
    admin: DynsecClient,
) -> None:
    kept, kept_token = await new_device(api, tenant_)
    lost, _ = await new_device(api, tenant_)
    for device_id in (kept, lost):
        await applied(live_database, device_id)
    assert (await _sync_cli(broker, live_database))[0] == 0
    # Behind our back: a client deleted, one disabled with its role cut, a stale one made
    # as Fleetcore makes them, and two of an operator's own that must never be touched.
    await admin.delete_client(lost)
    await admin.disable_client(kept)
    cut = apply.role_acls(kept)[0]
    await admin.remove_role_acl(apply.role_name(kept), cut)
    stale = str(uuid.uuid4())
    await apply.upsert(admin, uuid.UUID(stale), "fcd_stale")
    operators = str(uuid.uuid4())
    await admin.create_client(operators, "operator-secret", textname="an operator's own")
    await admin.create_client("operator-tool", "operator-secret", textname="tooling")

    code, out = await _sync_cli(broker, live_database, "--dry-run")
    assert code == 1, out
    for expected in (lost, "needs a token rotation", kept, "disabled in the broker", "role", stale):
        assert expected in out, out
    assert operators not in out
    assert "operator-tool" not in out
    assert (await admin.get_client(kept)).disabled  # the dry run changed nothing
    assert stale in await admin.list_clients()
    assert cut not in await admin.get_role(apply.role_name(kept))

    code, out = await _sync_cli(broker, live_database)
    assert code == 1, out  # the lost client needs a token: that remains
    clients = await admin.list_clients()
    assert stale not in clients
    assert {operators, "operator-tool", kept} <= set(clients)
    assert not (await admin.get_client(kept)).disabled
    assert cut in await admin.get_role(apply.role_name(kept))
    device = Probe(broker.port, kept, kept_token)
    try:
        assert await device.connect()
        assert not (await device.publish(f"devices/{kept}/telemetry")).is_failure
    finally:
        device.close()

    rotated = await api.post(
        f"/api/v1/devices/{lost}/credentials/rotate", headers=tenant_.headers(Role.MANAGER)
    )
    assert rotated.status_code == 200
    await applied(live_database, lost)
    code, out = await _sync_cli(broker, live_database)
    assert (code, "in sync" in out) == (0, True), out


async def test_imported_and_self_provisioned_devices_get_their_clients(
    api: httpx.AsyncClient, tenant_: Tenant, broker: DynsecBroker, live_database: Database
) -> None:
    content = b"name,serial_number\nA,IMP-1\nB,IMP-2\n"
    imported = await api.post(
        "/api/v1/devices/import",
        files={"file": ("devices.csv", content, "text/csv")},
        headers=tenant_.headers(Role.MANAGER),
    )
    assert imported.status_code == 200, imported.text
    made = [(r["device_id"], r["access_token"]) for r in imported.json()["rows"]]
    assert len(made) == 2
    profile = await api.post(
        "/api/v1/device-profiles",
        json={"name": "self", "provisioning_enabled": True},
        headers=tenant_.headers(Role.MANAGER),
    )
    assert profile.status_code == 201, profile.text
    provisioned = await api.post(
        "/api/v1/provision",
        json={
            "provision_key": profile.json()["provision_key"],
            "provision_secret": profile.json()["provision_secret"],
            "serial_number": "SELF-1",
        },
    )
    assert provisioned.status_code in (200, 201), provisioned.text
    made.append((provisioned.json()["device_id"], provisioned.json()["access_token"]))
    for device_id, token in made:
        await applied(live_database, device_id)
        assert await logs_in(broker, device_id, token)


async def test_a_restarted_fleetcore_applies_what_the_last_one_left_pending(
    live_database: Database, tmp_path: Path, broker: DynsecBroker
) -> None:
    broker.stop()
    settings = {"mqtt_url": broker.url, "mqtt_dynsec": True}
    async with running_app(live_database, tmp_path, **settings) as first, client_for(first) as http:
        org = await make_tenant(http, live_database)
        device_id, token = await new_device(http, org)

        async def failed_once() -> bool:
            (row,) = await rows(live_database, device_id)
            return row.last_error is not None

        await wait_until(failed_once, within=20, every=0.05)
    broker.start()
    (row,) = await rows(live_database, device_id)
    assert row.done_at is None  # stopped with the row pending
    async with running_app(live_database, tmp_path, **settings):
        await applied(live_database, device_id)
    assert await logs_in(broker, device_id, token)
