"""GET /health: Fleetcore's full stack versus a bare FastAPI app, same server, same run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tests.support.env import fleetcore_env
from tests.support.postgres import free_port

from bench.load import run_load

BIN = Path(sys.executable).parent


def _wait(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _measure(command: list[str], port: int, env: dict[str, str]) -> dict[str, float]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait(port, process)
        asyncio.run(run_load("127.0.0.1", port, "/health", seconds=1.0))  # warm-up
        result = asyncio.run(run_load("127.0.0.1", port, "/health", seconds=4.0))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return {
        "requests_per_s": round(result.rate),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
    }


def run() -> dict[str, Any]:
    """Run both and report the ratio."""
    env = fleetcore_env()
    env["FLEETCORE_LOG_LEVEL"] = "warning"
    bare_port, fleet_port = free_port(), free_port()
    bare = _measure(
        [
            str(BIN / "uvicorn"),
            "bench.bare_app:app",
            "--port",
            str(bare_port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        bare_port,
        env,
    )
    with tempfile.TemporaryDirectory() as data_dir:
        fleet = _measure(
            [str(BIN / "fleetcore"), "serve", "--port", str(fleet_port), "--data-dir", data_dir],
            fleet_port,
            env,
        )
    return {
        "name": "http_health",
        "ceiling_bare_fastapi": bare,
        "fleetcore": fleet,
        "ratio": round(fleet["requests_per_s"] / bare["requests_per_s"], 3),
        "note": "one uvicorn worker each; the load generator shares the 2 cores",
    }
