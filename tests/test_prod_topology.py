"""The production topology without containers: scripts/prod-topology.sh up/down.

Real PostgreSQL, Mosquitto (dynamic security, the mount plugin) and Redis from the Debian
packages, and real `fleetcore serve` processes: 2 api, 2 ingest, 1 worker. A device sends
through the broker; one api and one ingest process are SIGKILLed mid-stream; every reading
the broker acknowledged must be stored, and the other api keeps answering. `down` must
leave no process of the topology behind.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from websockets.asyncio.client import connect

from tests.support import forkserver
from tests.support.env import FLEETCORE
from tests.support.http_clients import local_client, local_sync_client
from tests.support.ingest_workers import BASE_TS, Publisher, expected_readings
from tests.support.mqtt_raw import connect_packet
from tests.support.wait import wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prod-topology.sh"
PASSWORD = "topology-password-1"


@dataclass(frozen=True, slots=True)
class Topology:
    root: Path
    api: list[str]
    mqtt_port: int
    database_url: str
    pids: dict[str, int]


def script(command: str, root: Path) -> dict[str, Any]:
    """Run the script; its last line of output parsed as JSON ({} when there is none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCORE_", "TOPOLOGY_"))}
    done = subprocess.run(
        [str(SCRIPT), command, str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}\n{logs(root)}"
    lines = done.stdout.strip().splitlines()
    return orjson.loads(lines[-1]) if lines else {}


def logs(root: Path) -> str:
    """The tail of every log of the topology (for failure messages)."""
    return "\n".join(
        f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}"
        for path in sorted((root / "log").glob("*.log"))
    )


def alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(root: Path) -> list[str]:
    """Live processes whose command line or environment names the topology's directory."""
    needle = str(root).encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or not alive(int(proc.name)):
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in seen:
            found.append(f"{proc.name}: {(proc / 'cmdline').read_bytes()!r}")
    return found


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    # Not pytest's tmp_path: PostgreSQL runs as `postgres` under root, and must reach DIR.
    root = Path(tempfile.mkdtemp(prefix="fleetcore-topology-"))
    try:
        up = script("up", root)
        yield Topology(
            root=root,
            api=up["api"],
            mqtt_port=int(urlsplit(up["mqtt_url"]).port or 0),
            database_url=up["database_url"],
            pids=up["pids"],
        )
    finally:
        script("down", root)
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Fleet:
    admin: dict[str, str]
    token: str
    device_id: str


@pytest.fixture(scope="module")
def fleet(topology: Topology) -> Fleet:
    """A superuser (CLI), then through api[0]: an organization, its admin and a device."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
    created = forkserver.run(
        [FLEETCORE, "admin", "create-superuser", "--email", "root@topology.example.com"],
        env={
            **env,
            "FLEETCORE_DATABASE_URL": topology.database_url,
            "FLEETCORE_SUPERUSER_PASSWORD": PASSWORD,
            "FLEETCORE_ENVIRONMENT": "production",
            "FLEETCORE_SECRET_KEY": secrets.token_urlsafe(36),  # not used to sign anything
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    with local_sync_client(base_url=topology.api[0], timeout=30) as http:

        def login(email: str) -> dict[str, str]:
            answer = http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert answer.status_code == 200, answer.text
            return {"Authorization": f"Bearer {answer.json()['access_token']}"}

        root = login("root@topology.example.com")
        org = http.post("/api/v1/organizations", headers=root, json={"name": "T", "slug": "t"})
        assert org.status_code == 201, org.text
        user = {
            "email": "admin@topology.example.com",
            "password": PASSWORD,
            "role": "admin",
            "organization_id": org.json()["id"],
        }
        assert http.post("/api/v1/users", headers=root, json=user).status_code == 201
        admin = login("admin@topology.example.com")
        device = http.post(
            "/api/v1/devices", headers=admin, json={"name": "d1", "serial_number": "T-1"}
        )
        assert device.status_code == 201, device.text
    return Fleet(admin, device.json()["access_token"], device.json()["id"])


def connack(port: int, username: str, password: str) -> int | None:
    """The broker's CONNACK return code for these credentials (None: no answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        probe = connect_packet(
            f"probe-{secrets.token_hex(4)}", username=username, password=password
        )
        sock.sendall(probe)
        reply = sock.recv(4)
    return reply[3] if len(reply) == 4 and reply[0] == 0x20 else None


async def device_may_connect(topology: Topology, fleet: Fleet) -> None:
    """Dynamic security has the device's client (the api's outbox put it there)."""
    await wait_until(
        lambda: connack(topology.mqtt_port, fleet.device_id, fleet.token) == 0,
        within=20,
        every=0.1,
    )


async def stored(api: str, fleet: Fleet) -> set[tuple[str, int]]:
    """(device id, ts) of every stored reading of key n, read through the API."""
    async with local_client(base_url=api, timeout=10) as http:
        answer = await http.get(
            f"/api/v1/devices/{fleet.device_id}/telemetry",
            headers=fleet.admin,
            params={"keys": "n", "start": BASE_TS - 1000, "limit": 10_000},
        )
    assert answer.status_code == 200, answer.text
    return {(fleet.device_id, item["ts"]) for item in answer.json()["items"]}


def subscribe(fleet: Fleet) -> str:
    """The WebSocket message subscribing to the device's telemetry."""
    request = {"type": "subscribe", "channel": "telemetry", "device_id": fleet.device_id}
    return orjson.dumps(request).decode()


PROBE = 100_000  # the message index the WebSocket test sends


async def test_a_websocket_client_on_the_other_api_sees_a_device_reading(
    topology: Topology, fleet: Fleet
) -> None:
    await device_may_connect(topology, fleet)
    token = fleet.admin["Authorization"].removeprefix("Bearer ")
    ws_url = topology.api[1].replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    async with connect(ws_url) as ws:
        await ws.send(subscribe(fleet))
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"
        publisher = Publisher(topology.mqtt_port, (fleet.device_id, fleet.token), "ws-probe")
        publisher.connect()
        try:
            publisher.publish(fleet.device_id, PROBE)
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
        finally:
            publisher.close()
    assert message["type"] == "telemetry"
    assert message["device_id"] == fleet.device_id
    assert message["values"] == {"n": PROBE}


async def test_killing_an_api_and_an_ingest_process_loses_nothing_acknowledged(
    topology: Topology, fleet: Fleet
) -> None:
    await device_may_connect(topology, fleet)
    # A sign-in on api[0] is good on api[1]: every process signs with the same key.
    token = fleet.admin["Authorization"].removeprefix("Bearer ")
    ws_url = topology.api[1].replace("http://", "ws://") + f"/api/v1/ws?token={token}"
    async with connect(ws_url) as ws:
        await ws.send(subscribe(fleet))
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "subscribed"

    publisher = Publisher(topology.mqtt_port, (fleet.device_id, fleet.token), "topology-device")
    publisher.connect()
    try:
        for index in range(40):
            publisher.publish(fleet.device_id, index)
        await wait_until(lambda: len(publisher.acked) == 40, within=20, every=0.05)
        first = expected_readings(sorted(publisher.acked))
        await wait_until(lambda: _holds(topology.api[1], fleet, first), within=30, every=0.2)

        os.kill(topology.pids["api-1"], signal.SIGKILL)
        os.kill(topology.pids["ingest-1"], signal.SIGKILL)
        for index in range(40, 100):
            publisher.publish(fleet.device_id, index)
            if index % 10 == 0:  # the other api answers all along
                async with local_client(timeout=5) as http:
                    ready = await http.get(f"{topology.api[1]}/ready")
                assert ready.status_code == 200, ready.text
        await wait_until(lambda: publisher.outstanding == 0, within=30, every=0.05)
        assert publisher.refused == {}
        assert publisher.no_subscribers == set()  # every message had a consumer's session
        assert len(publisher.acked) == 100
    finally:
        publisher.close()

    # The killed ingest's session holds the messages the broker gave it: they are stored
    # once its supervisor has started it again under the same id.
    everything = expected_readings(sorted(publisher.acked))
    started = time.monotonic()
    await wait_until(lambda: _holds(topology.api[1], fleet, everything), within=60, every=0.2)
    probe = expected_readings([(fleet.device_id, PROBE)])
    assert await stored(topology.api[1], fleet) - probe == everything  # stored once each
    assert time.monotonic() - started < 60

    # `up` again: the same topology, the two killed processes under new pids.
    again = await asyncio.to_thread(script, "up", topology.root)
    assert again["api"] == topology.api
    assert again["pids"]["api-1"] != topology.pids["api-1"]
    assert again["pids"]["ingest-1"] != topology.pids["ingest-1"]
    unchanged = {k: v for k, v in again["pids"].items() if k not in ("api-1", "ingest-1")}
    assert unchanged == {k: v for k, v in topology.pids.items() if k not in ("api-1", "ingest-1")}
    topology.pids.update(again["pids"])


async def _holds(api: str, fleet: Fleet, readings: set[tuple[str, int]]) -> bool:
    return readings <= await stored(api, fleet)


def test_down_stops_every_process(topology: Topology) -> None:
    pids = dict(topology.pids)
    assert all(alive(pid) for pid in pids.values()), pids
    script("down", topology.root)
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert processes_mentioning(topology.root) == []
    assert not list((topology.root / "run").glob("*"))
