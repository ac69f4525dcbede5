"""The uvicorn server Fleetcore runs under, configured for a graceful stop."""

from __future__ import annotations

import gc
import os
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from fleetcore.app import create_app
from fleetcore.config import Settings, load_settings
from fleetcore.logging import configure_logging


def build_server(settings: Settings, app: FastAPI | None = None) -> uvicorn.Server:
    """On SIGINT/SIGTERM uvicorn stops accepting, lets in-flight requests finish (up to
    shutdown_grace_s), then runs the lifespan shutdown: jobs, broker, database, in order."""
    config = uvicorn.Config(app or create_app(settings), **_options(settings))
    return uvicorn.Server(config)


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        # Only these proxies may name the client address (the sign-in limits count by it).
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "server_header": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_s),
        # Live messages are small JSON and go to many sockets: per-message deflate would
        # compress each one once per subscriber (its state is per connection, so nothing
        # is shared) and cost more CPU than the bytes it saves (bench/live_latency).
        "ws_per_message_deflate": False,
        "lifespan": "on",
    }


def run_workers(settings: Settings, overrides: dict[str, Any]) -> int:
    """Serve with `settings.workers` api processes on one port (uvicorn's supervisor); the
    exit status. Each process loads its settings from the environment, where the command
    line's options are put first."""
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"FLEETCORE_{name.upper()}"] = str(value)
    config = uvicorn.Config(
        "fleetcore.server:worker_app",
        factory=True,
        workers=settings.workers,
        **_options(settings),
    )
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


def worker_app() -> FastAPI:
    """One api process of `run_workers` (uvicorn imports and calls this in each process)."""
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    gc.disable()  # while the app is built: see tune_gc
    application = create_app(settings)
    tune_gc()
    return application


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server process.

    Every message in flight holds a few short-lived objects until its batch commits; with
    the default thresholds they reach the oldest generation and trigger a full collection
    about once a second (a quarter of the CPU under load, measured by bench/mqtt_ingest).
    Start-up objects (modules, the app) are frozen out of collection and the young
    generation is collected less often; cycles are still collected.

    The young generation's threshold is 500,000 net allocations, the middle one's 100: the
    batches queued for the rules and analytics engines keep their readings alive past a
    young collection, and every survivor was traversed again in the middle generation. At
    (50,000, 20) that was about a third of the rules' cost: with 1,000 rules
    bench/rules_ingest dropped 18-27% against 12-16% now, and the server's peak RSS stayed
    at 270 MB under that load. Memory held by cyclic garbage between collections is bounded
    by the threshold.

    Called once the app is built, with collection disabled while its modules were imported
    and it was built (`fleetcore serve`): what start-up makes lives for the process, and
    collections walking it cost a fifth of start-up's CPU. It enables collection. Start-up's
    few cycles of garbage (about 2,400 objects of 310,000) are frozen with the rest rather
    than collected first: a collection here walked all 310,000, a quarter of a second of
    every process's start. Both: 3.3 to about 2.5 CPU-s to the first /health.
    """
    gc.freeze()
    gc.set_threshold(500_000, 100, 100)
    gc.enable()
