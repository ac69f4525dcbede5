"""HTTP ingest through real `fleetcore serve` processes: 100 device clients, both databases.

Organization, admin and devices are made the way an operator would: `fleetcore db upgrade`,
`fleetcore admin create-superuser`, then the REST API. Each client is one device posting to
/api/v1/devices/me/telemetry over a keep-alive connection; every answer comes after commit.

The ceiling for single readings is a bare FastAPI app (bench/bare_app.py: parse the JSON
body, answer 202) under the same load from the same generator, measured just before each
database's server runs, so each ratio compares figures taken a minute apart.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.env import fleetcore_env
from tests.support.postgres import PostgresServer, free_port

from bench.load import LoadResult, RequestFactory, post_head, post_request, run_requests

BIN = Path(sys.executable).parent
CLIENTS = 100
SECONDS = 5.0
WARM_UP_S = 1.0
ROOT = "root@bench.example.com"
ADMIN = "admin@bench.example.com"
PASSWORD = "bench password 1234"  # noqa: S105 (a throwaway server on loopback)
PATH = "/api/v1/devices/me/telemetry"
_ITEM = b'{"ts":%d,"values":{' + b",".join(b'"k%d":2%d.5' % (k, k) for k in range(10)) + b"}}"
_SINGLE = b'{"ts":%d,"values":{"t":21.5}}'


def _env(**extra: str) -> dict[str, str]:
    env = fleetcore_env()
    env.update(FLEETCORE_LOG_LEVEL="warning", FLEETCORE_MQTT_PORT="0", **extra)
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [str(BIN / "fleetcore"), *args], env=env, check=True, capture_output=True, timeout=120
    )


@contextmanager
def serving(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `fleetcore serve` process on `port` logging to `log`, stopped with SIGTERM after."""
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [str(BIN / "fleetcore"), "serve", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_healthy(process, port, log)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            time.sleep(0.1)


async def organization_admin(http: httpx.AsyncClient) -> dict[str, str]:
    """As the superuser: the Bench organization and its admin; returns the admin's headers."""

    async def login(email: str) -> dict[str, str]:
        answer = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
        answer.raise_for_status()
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    root = await login(ROOT)
    org = await http.post(
        "/api/v1/organizations", headers=root, json={"name": "Bench", "slug": "bench"}
    )
    org.raise_for_status()
    user = {
        "email": ADMIN,
        "password": PASSWORD,
        "role": "admin",
        "organization_id": org.json()["id"],
    }
    (await http.post("/api/v1/users", headers=root, json=user)).raise_for_status()
    return await login(ADMIN)


async def provision(port: int) -> list[str]:
    """Organization, admin and CLIENTS devices through the API; returns the device tokens."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        admin = await organization_admin(http)
        tokens = []
        for i in range(CLIENTS):
            device = await http.post(
                "/api/v1/devices", headers=admin, json={"name": f"d{i}", "serial_number": f"B{i}"}
            )
            device.raise_for_status()
            token = device.json()["access_token"]
            # First contact turns a device active; a running fleet is past that.
            first = await http.post(PATH, headers={"X-Device-Token": token}, json={"hello": 1})
            first.raise_for_status()
            tokens.append(token)
        return tokens


def _factory(
    tokens: list[str], base: int, items: int, template: bytes, path: str = PATH
) -> RequestFactory:
    """Connection c posts as device c; request n holds `items` fresh timestamps."""
    heads = [post_head("127.0.0.1", path, {"X-Device-Token": t}) for t in tokens]

    def make(connection: int, n: int) -> bytes:
        ts = base + n * items
        if items == 1:
            return post_request(heads[connection], template % ts)
        body = b"[" + b",".join(template % (ts + i) for i in range(items)) + b"]"
        return post_request(heads[connection], body)

    return make


async def _shape(
    port: int, tokens: list[str], base: int, items: int, template: bytes, path: str = PATH
) -> tuple[LoadResult, int]:
    """Warm up, then measure; returns the measurement and the 2xx requests of both."""
    warm = _factory(tokens, base, items, template, path)
    first = await run_requests("127.0.0.1", port, warm, connections=len(tokens), seconds=WARM_UP_S)
    make = _factory(tokens, base + 1_000_000, items, template, path)
    result = await run_requests("127.0.0.1", port, make, connections=len(tokens), seconds=SECONDS)
    for status, count in first.errors.items():
        result.errors[status] = result.errors.get(status, 0) + count
    return result, first.requests + result.requests


def bare_single(log: Path) -> dict[str, float]:
    """The ceiling: the single-reading load against bare FastAPI (one uvicorn worker)."""
    port = free_port()
    command = [str(BIN / "uvicorn"), "bench.bare_app:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log"]
    with log.open("ab") as sink:
        process = subprocess.Popen(command, env=_env(), stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(process, port, log)
        tokens = ["bare"] * CLIENTS
        base = int(time.time() * 1000)
        result, _ = asyncio.run(_shape(port, tokens, base, 1, _SINGLE, path="/telemetry"))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return _figures(result, 1)


def _figures(result: LoadResult, readings: int) -> dict[str, float]:
    return {
        "requests_per_s": round(result.rate),
        "readings_per_s": round(result.rate * readings),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "non_2xx": sum(result.errors.values()),
    }


async def _load(port: int) -> dict[str, Any]:
    tokens = await provision(port)
    base = int(time.time() * 1000) - 4 * 3_600_000
    batch, batch_requests = await _shape(port, tokens, base, 10, _ITEM)  # 10 ts x 10 keys
    single, single_requests = await _shape(port, tokens, base + 2_000_000, 1, _SINGLE)
    return {
        "batch_100": _figures(batch, 100),
        "single": _figures(single, 1),
        "answered_readings": batch_requests * 100 + single_requests + len(tokens),
        "errors": {**batch.errors, **single.errors},
    }


async def _pg_count(url: str) -> int:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM ts_num"))
    finally:
        await connection.close()


def _sqlite_count(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM ts_num").fetchone()[0])


def measure(server: PostgresServer, tmp: Path) -> dict[str, Any]:
    """Both databases, both shapes; checks every answered reading is in the database."""
    results: dict[str, Any] = {}
    sqlite_dir = tmp / "http-sqlite"
    pg_url = server.create_database("http")
    setups = {
        "sqlite": _env(FLEETCORE_DATA_DIR=str(sqlite_dir)),
        "postgresql": _env(FLEETCORE_DATABASE_URL=pg_url),
    }
    for name, env in setups.items():
        bare = bare_single(tmp / f"bare-{name}.log")
        if name == "postgresql":
            _cli(env, "db", "upgrade")
        _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
        port = free_port()
        with serving(env, port, tmp / f"serve-{name}.log"):
            figures = asyncio.run(_load(port))
        stored = (
            asyncio.run(_pg_count(pg_url))
            if name == "postgresql"
            else _sqlite_count(sqlite_dir / "fleetcore.db")
        )
        figures["all_answered_readings_stored"] = stored == figures.pop("answered_readings")
        figures["bare_fastapi_single"] = bare
        figures["single_vs_bare_fastapi"] = round(
            figures["single"]["requests_per_s"] / bare["requests_per_s"], 3
        )
        results[name] = figures
    best = max(results[db]["single_vs_bare_fastapi"] for db in results)
    results["single_readings_note"] = (
        f"single readings answer at best {best:.0%} of bare FastAPI's requests/s under the "
        "same load (target 40%); each answer waits for the commit of the batch holding it"
    )
    return results


NOTE = (
    "loopback, one uvicorn worker per server, 100 keep-alive clients from one Python process "
    "sharing the 2 cores with the server and PostgreSQL; 1 s warm-up excluded"
)
