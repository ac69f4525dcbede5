"""Process roles: what each serves and starts, what is refused, several api processes."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetcore import migrate
from fleetcore.config import ConfigError, load_settings
from fleetcore.db import Database
from fleetcore.roles import ROLES, RUNS_IN
from tests.conftest import client_for, running_app
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.faults import ServerProcess
from tests.support.http_clients import local_client
from tests.support.postgres import PostgresServer, free_port
from tests.support.wait import wait_until

CLUSTER_JOBS = {
    "commands.expire",
    "housekeeping.retention",
    "presence.sweep",
    "recommendations.expire",
    "recommendations.sync",
    "rules.no-data",
    "telemetry-compaction",
    "telemetry-partitions",
    "telemetry-retention",
}


@pytest.fixture
async def pg(postgres_server: PostgresServer | None) -> AsyncIterator[tuple[str, Database]]:
    """A fresh migrated PostgreSQL database (real commits) and its URL."""
    if postgres_server is None:
        pytest.skip("needs the throwaway PostgreSQL server")
    url = postgres_server.create_database(f"roles_{uuid.uuid4().hex[:8]}")
    database = Database.from_url(url, pool_size=5)
    await migrate.upgrade(database)
    try:
        yield url, database
    finally:
        await database.close()


def test_every_part_names_known_roles() -> None:
    for part, roles in RUNS_IN.items():
        assert roles, part
        assert roles <= set(ROLES), part
        assert "all" in roles, f"{part} would not run in the single process"


@pytest.mark.parametrize("role", ["api", "ingest", "worker", "all"])
async def test_each_role_serves_and_starts_its_parts(
    role: str, pg: tuple[str, Database], tmp_path: Path
) -> None:
    url, database = pg
    mqtt_port = free_port() if role in ("ingest", "all") else 0
    async with (
        running_app(database, tmp_path, role=role, database_url=url, mqtt_port=mqtt_port) as app,
        client_for(app) as http,
    ):
        for path in ("/health", "/ready", "/metrics"):
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text)
        devices = await http.get("/api/v1/devices")
        if role in ("api", "all"):
            assert devices.status_code == 401  # there, and asks who is calling
        else:
            assert devices.status_code == 404
        components = set(app.state.components)
        jobs = set(app.state.jobs.names)

    takes_traffic = role in ("api", "ingest", "all")
    assert ("telemetry-pipeline" in components) is takes_traffic
    assert ("presence" in components) is takes_traffic
    assert ("mqtt-broker" in components) is (role in ("ingest", "all"))
    assert ("notifications" in components) is (role in ("worker", "all"))
    assert ("analytics-engine" in components) is takes_traffic
    assert "rules-engine" in components  # evaluates batches, or sweeps for silence (worker)
    assert ("commands" in components) is True
    if role in ("worker", "all"):
        assert jobs >= CLUSTER_JOBS
    else:
        assert not (CLUSTER_JOBS & jobs), CLUSTER_JOBS & jobs
    # Per-process jobs beside other processes: their last-seen times and rule changes.
    assert ({"presence.seen", "rules.refresh"} <= jobs) is (role in ("api", "ingest"))
    assert ("analytics.health" in jobs) is takes_traffic
    # Plans changed elsewhere: every process whose limits apply, "all" ones included.
    assert ("plans.refresh" in jobs) is takes_traffic


@pytest.mark.parametrize("role", ["api", "ingest", "worker"])
def test_sqlite_refuses_every_role_but_all(role: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs PostgreSQL"):
        load_settings(role=role, data_dir=tmp_path, mqtt_port=1883)


def test_workers_need_role_api_on_postgresql(tmp_path: Path) -> None:
    pg_url = "postgresql+asyncpg://u@127.0.0.1:1/x"
    with pytest.raises(ConfigError, match="FLEETCORE_WORKERS"):
        load_settings(workers=2, data_dir=tmp_path)  # SQLite, role all
    for role in ("all", "ingest", "worker"):
        with pytest.raises(ConfigError, match="FLEETCORE_WORKERS"):
            load_settings(role=role, workers=2, database_url=pg_url, mqtt_port=1883)
    assert load_settings(role="api", workers=2, database_url=pg_url).workers == 2


def test_serve_refuses_a_role_on_sqlite_with_a_clear_message(tmp_path: Path) -> None:
    result = forkserver.run(
        [FLEETCORE, "serve", "--role", "worker"],
        env=fleetcore_env(FLEETCORE_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "FLEETCORE_ROLE=worker" in result.stderr
    assert "PostgreSQL" in result.stderr
    assert not (tmp_path / "fleetcore.db").exists(), "refused before touching the database"


def _spawned_children(parent: int) -> list[int]:
    """uvicorn's worker processes of `parent` (multiprocessing spawn children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


async def test_serve_workers_starts_api_processes_that_all_answer(
    pg: tuple[str, Database], tmp_path: Path
) -> None:
    url, _ = pg
    server = ServerProcess(tmp_path / "api", database_url=url, role="api", workers="2")
    try:
        await server.start()
        await wait_until(lambda: len(_spawned_children(server.pid)) == 2, within=30)
        children = _spawned_children(server.pid)

        async def answers() -> bool:
            async with local_client() as http:  # a new connection each time
                response = await http.get(f"{server.base}/api/v1/devices", timeout=5)
            return response.status_code == 401

        for paused in children:
            # With one process stopped, only the other can accept: each must answer alone.
            os.kill(paused, signal.SIGSTOP)
            try:
                for _ in range(3):
                    assert await answers()
            finally:
                os.kill(paused, signal.SIGCONT)
        assert sorted(_spawned_children(server.pid)) == sorted(children), "a worker restarted"
    finally:
        await server.stop()
    assert server.process is not None
    assert server.process.returncode == 0
    assert not _spawned_children(server.pid)
