"""The `fleetcore` command as a user runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from fleetcore import __version__, server
from fleetcore.server import build_server, worker_app
from tests.conftest import TEST_SECRET, make_settings
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.postgres import PostgresServer, free_port
from tests.support.wait import wait_until, wait_until_sync


def _env(**extra: str) -> dict[str, str]:
    env = fleetcore_env()
    env.update(extra)
    return env


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return forkserver.run(
        [FLEETCORE, *args], capture_output=True, text=True, env=_env(**env), timeout=60, check=False
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"fleetcore {__version__}"


def test_an_api_process_builds_its_app_then_collects_as_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No collection while the app is built (what start-up makes lives for the process), then
    collection on, with the server's thresholds and start-up frozen out of it."""
    for name, value in fleetcore_env(FLEETCORE_DATA_DIR=str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    # Logging is the process's, not this worker's: it stays as the other tests have it.
    monkeypatch.setattr(server, "configure_logging", lambda *_: None)
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(700, 10, 10)
    gc.disable()
    try:
        worker_app()
        assert gc.isenabled()
        assert gc.get_threshold() == (500_000, 100, 100)
        assert gc.get_freeze_count() > 0
    finally:
        gc.set_threshold(*threshold)
        (gc.enable if enabled else gc.disable)()


def test_help_explains_serve_options() -> None:
    result = _run("serve", "--help")
    assert result.returncode == 0
    for option in ("--host", "--port", "--mqtt-port", "--data-dir", "FLEETCORE_DATA_DIR"):
        assert option in result.stdout


def test_malformed_database_url_stops_serve(tmp_path: Path) -> None:
    result = _run("serve", "--data-dir", str(tmp_path), FLEETCORE_DATABASE_URL="postgresql//oops")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "FLEETCORE_DATABASE_URL" in lines[0]


def test_db_upgrade_and_current_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    before = _run("db", "current", FLEETCORE_DATABASE_URL=url)
    assert before.returncode == 0
    assert "(behind)" in before.stdout
    upgraded = _run("db", "upgrade", FLEETCORE_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "(current)" in _run("db", "current", FLEETCORE_DATABASE_URL=url).stdout


def test_db_upgrade_on_postgresql(postgres_server: PostgresServer | None) -> None:
    if postgres_server is None:
        pytest.fail("needs the throwaway PostgreSQL server")
    url = postgres_server.create_database(f"cli_{uuid.uuid4().hex[:10]}")
    upgraded = _run("db", "upgrade", FLEETCORE_DATABASE_URL=url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "(current)" in _run("db", "current", FLEETCORE_DATABASE_URL=url).stdout


def _wait_for_health(base: str, process: forkserver.Process, timeout: float = 30) -> None:
    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(
                f"serve exited early: {process.stderr.read() if process.stderr else ''}"
            )
        try:
            return httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until_sync(healthy, within=timeout, every=0.05)


def test_serve_embedded_default_then_sigterm(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [FLEETCORE, "serve", "--port", str(port), "--mqtt-port", str(free_port())],
        env=_env(FLEETCORE_DATA_DIR=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(base, process)
        ready = httpx.get(f"{base}/ready", timeout=5)
        assert ready.status_code == 200, ready.text
        missing = httpx.get(f"{base}/missing", headers={"X-Request-ID": "cli-test-1"}, timeout=5)
        assert missing.status_code == 404
        assert missing.json()["error"]["request_id"] == "cli-test-1"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    # uvicorn shuts down cleanly, then re-raises the signal so supervisors see why it exited.
    assert process.returncode in (0, -signal.SIGTERM), stderr
    assert (data_dir / "fleetcore.db").exists()
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert events, stderr
    assert all("timestamp" in e and "level" in e for e in events)
    request_lines = [e for e in events if e.get("request_id") == "cli-test-1"]
    assert request_lines
    assert request_lines[0]["status"] == 404
    names = [e["event"] for e in events]
    assert "started" in names
    assert names.index("stopped") > names.index("started")
    assert TEST_SECRET not in stderr


async def test_sigterm_lets_in_flight_request_finish(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, port=free_port(), auto_migrate=True)
    server = build_server(settings)
    app = server.config.app
    release = asyncio.Event()
    entered = asyncio.Event()

    @app.get("/probe/slow")  # type: ignore[attr-defined, untyped-decorator]
    async def slow() -> dict[str, str]:
        entered.set()
        await release.wait()
        return {"done": "yes"}

    serving = asyncio.create_task(server.serve())
    async with local_client(base_url=f"http://127.0.0.1:{settings.port}") as http:
        await wait_until(lambda: server.started, within=20)
        request = asyncio.create_task(http.get("/probe/slow", timeout=20))
        await asyncio.wait_for(entered.wait(), 20)  # the request is in flight
        # What uvicorn's SIGTERM handler does (it also re-raises the signal at exit, which
        # would end pytest; the subprocess test above covers the real signal).
        server.should_exit = True
        # Shutting down: the listening sockets are closed, the request is still held.
        await wait_until(lambda: not any(s.is_serving() for s in server.servers), within=20)
        assert not serving.done(), "server stopped with a request in flight"
        release.set()
        response = await request
    await asyncio.wait_for(serving, 20)
    assert response.status_code == 200
    assert response.json() == {"done": "yes"}
