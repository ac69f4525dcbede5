"""Soak: `fleetcore serve` under a steady simulated fleet for a long time (30 minutes by
default; `python -m bench soak --duration 180`, or BENCH_SOAK_SECONDS).

The server runs as its own process (SQLite, embedded broker), as `make run` starts it, with
the demo rules and one more on the simulator's profile. Here, in this process: 200 devices
of `fleetcore simulate` publish QoS 1 over MQTT at 1,000 readings/s in all (with the
simulator's signal faults, so spikes open alerts), and WebSocket clients, signed in as a
viewer, watch every device's telemetry and the alerts (signing in again when their access
token ends the socket). The server's resident memory is sampled every few seconds. At the
end, after a clean stop, the rows in ts_num must equal the readings acknowledged by PUBACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from tests.support.env import fleetcore_env
from tests.support.postgres import free_port
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bench.mqtt_ingest import _wait_for_mqtt, cpu_seconds
from bench.telemetry_http import serving
from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import UserIn
from fleetcore.db import Database
from fleetcore.demo import ensure_demo_rules
from fleetcore.rules.models import Rule
from fleetcore.rules.schemas import RuleIn
from fleetcore.simulator.provision import Fleet, provision
from fleetcore.simulator.runner import Outcome, Simulation, Target, Transport, readings_per_round

DEVICES = 200
RATE = 1_000.0  # readings/s for the whole fleet
WS_CLIENTS = 10
DEFAULT_SECONDS = 30 * 60.0
SAMPLE_S = 5.0
VIEWER = "soak-viewer@bench.example.com"
PASSWORD = "soak password 1234"  # noqa: S105 (a throwaway server on loopback)
EXTRA_RULE = {
    "name": "Current climbing",
    "description": "Soak: motor current rising faster than 2 A/min over 5 minutes.",
    "condition": {
        "type": "rate_of_change",
        "key": "current",
        "window_s": 300,
        "op": ">",
        "value": 2,
        "per": "minute",
    },
    "severity": "minor",
}


def duration_s() -> float:
    """How long to run: BENCH_SOAK_SECONDS (set by --duration), else 30 minutes."""
    return float(os.environ.get("BENCH_SOAK_SECONDS") or DEFAULT_SECONDS)


async def _prepare(data_dir: Path) -> Fleet:
    """Schema, the simulated fleet, the rules and a viewer, before the server starts (so
    its rules engine loads the rules)."""
    database = Database.from_url(f"sqlite+aiosqlite:///{data_dir / 'fleetcore.db'}")
    try:
        await migrate.upgrade(database)
        fleet = await provision(
            database,
            organization="soak",
            count=DEVICES,
            profile="Soak devices",
            messages_per_s=RATE / readings_per_round(DEVICES),
        )
        await ensure_demo_rules(database, fleet.organization_id, fleet.profile_id)
        async with database.session(write=True) as session:
            rule = RuleIn.model_validate({**EXTRA_RULE, "profile_id": fleet.profile_id})
            values = rule.model_dump(mode="json", exclude_none=True)
            values["profile_id"] = fleet.profile_id
            session.add(Rule(organization_id=fleet.organization_id, **values))
            user = UserIn(
                email=VIEWER,
                password=PASSWORD,
                role=Role.VIEWER,
                organization_id=fleet.organization_id,
            )
            await users.create_user(session, None, data=user)
            await session.commit()
        return fleet
    finally:
        await database.close()


async def _watch(
    http: httpx.AsyncClient, ws_url: str, counts: Counter[str], stop: asyncio.Event
) -> None:
    """One WebSocket client: every device's telemetry and the alerts, until `stop`; signs in
    again whenever the server ends the socket (its access token expires after 15 minutes)."""
    while not stop.is_set():
        login = await http.post("/api/v1/auth/login", json={"email": VIEWER, "password": PASSWORD})
        login.raise_for_status()
        token = login.json()["access_token"]
        try:
            async with connect(f"{ws_url}/api/v1/ws?token={token}") as ws:
                for channel in ("telemetry", "alerts"):
                    await ws.send(orjson.dumps({"type": "subscribe", "channel": channel}).decode())
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 1.0)
                    except TimeoutError:
                        continue
                    message = orjson.loads(raw)
                    counts[message.get("type", "?")] += 1
                    if message.get("type") == "lagged":
                        counts["skipped"] += int(message.get("skipped", 0))
        except ConnectionClosed as exc:
            counts["closed_by_server"] += 1
            if exc.rcvd is None or exc.rcvd.code != 4401:  # 4401: the sign-in ended
                counts["ws_errors"] += 1
        except OSError:
            counts["ws_errors"] += 1


async def _sample(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    process = psutil.Process(pid)
    start = time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - start, int(process.memory_info().rss)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_S)


async def _soak(
    fleet: Fleet, pid: int, http_port: int, mqtt_port: int, seconds: float
) -> tuple[Outcome, Counter[str], list[tuple[float, int]]]:
    samples: list[tuple[float, int]] = []
    counts: Counter[str] = Counter()
    stop = asyncio.Event()
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        sampler = asyncio.create_task(_sample(pid, samples, stop))
        watchers = [
            asyncio.create_task(_watch(http, f"ws://127.0.0.1:{http_port}", counts, stop))
            for _ in range(WS_CLIENTS)
        ]
        simulation = Simulation(
            fleet.devices,
            rate=RATE,
            transport=Transport.MQTT,
            target=Target(http_url=base, mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}"),
            seed=1,
        )
        try:
            outcome = await simulation.run(seconds)
        finally:
            stop.set()
            await asyncio.gather(sampler, *watchers)
    return outcome, counts, samples


def _rss_figures(samples: list[tuple[float, int]], seconds: float) -> dict[str, Any]:
    """RSS at start, after warm-up (a fifth of the run, at most 5 minutes), at the end, its
    peak, and its growth per hour after warm-up (least-squares slope)."""
    mb = 2**20
    warm_up = min(300.0, seconds / 5)
    settled = [(t, rss) for t, rss in samples if t >= warm_up] or samples[-2:]
    n = len(settled)
    mean_t = sum(t for t, _ in settled) / n
    mean_r = sum(r for _, r in settled) / n
    var_t = sum((t - mean_t) ** 2 for t, _ in settled)
    slope = sum((t - mean_t) * (r - mean_r) for t, r in settled) / var_t if var_t else 0.0
    by_minute = {int(t // 60): round(r / mb, 1) for t, r in samples}
    return {
        "rss_mb_start": round(samples[0][1] / mb, 1),
        "rss_mb_after_warm_up": round(settled[0][1] / mb, 1),
        "rss_mb_end": round(samples[-1][1] / mb, 1),
        "rss_mb_peak": round(max(r for _, r in samples) / mb, 1),
        "rss_growth_mb_per_hour": round(slope * 3600 / mb, 1),
        "warm_up_s": warm_up,
        "rss_mb_by_minute": list(by_minute.values()),
    }


def _counts(path: Path) -> dict[str, int]:
    queries = {
        "stored": "SELECT count(*) FROM ts_num",
        "rules_enabled": "SELECT count(*) FROM rules WHERE enabled",
        "alerts": "SELECT count(*) FROM alerts",
        "alerts_open": "SELECT count(*) FROM alerts WHERE status != 'cleared'",
        "dead_letters": "SELECT count(*) FROM dead_letters",
    }
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {name: int(db.execute(sql).fetchone()[0]) for name, sql in queries.items()}


def _log_errors(log: Path) -> int:
    """Lines the server logged at error level."""
    return sum('"level": "error"' in line for line in log.read_text(errors="replace").splitlines())


def run() -> dict[str, Any]:
    """DEVICES simulated devices at RATE readings/s over MQTT with WS_CLIENTS WebSocket
    watchers and rules, for duration_s(); memory, errors and acknowledged against stored."""
    seconds = duration_s()
    with tempfile.TemporaryDirectory(prefix=f"soak-{uuid.uuid4().hex[:6]}-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        fleet = asyncio.run(_prepare(data_dir))
        http_port, mqtt_port = free_port(), free_port()
        env = fleetcore_env(
            FLEETCORE_DATA_DIR=str(data_dir),
            FLEETCORE_MQTT_PORT=str(mqtt_port),
            FLEETCORE_LOG_LEVEL="warning",
        )
        log = Path(tmp) / "serve.log"
        with serving(env, http_port, log) as process:
            _wait_for_mqtt(mqtt_port)
            cpu = cpu_seconds(process.pid)
            outcome, ws, samples = asyncio.run(
                _soak(fleet, process.pid, http_port, mqtt_port, seconds)
            )
            cpu = cpu_seconds(process.pid) - cpu
        counts = _counts(data_dir / "fleetcore.db")
        errors_logged = _log_errors(log)
    stats = outcome.stats
    return {
        "name": "soak",
        "devices": DEVICES,
        "requested_readings_per_s": RATE,
        "seconds": round(outcome.seconds, 1),
        "sent_readings": stats.sent,
        "acked_readings": stats.acked,
        "stored_readings": counts["stored"],
        "acked_equals_stored": stats.acked == counts["stored"],
        "errors": stats.errors,
        "unacked_at_stop": outcome.unacked,
        "devices_refused": len(outcome.refused),
        "server_errors_logged": errors_logged,
        "dead_letters": counts["dead_letters"],
        "websocket_clients": WS_CLIENTS,
        "websocket_messages": dict(sorted(ws.items())),
        "rules_enabled": counts["rules_enabled"],
        "alerts": counts["alerts"],
        "alerts_open_at_end": counts["alerts_open"],
        "faults": dict(sorted(stats.faults.items())),
        "server_cores_used": round(cpu / outcome.seconds, 2) if outcome.seconds else 0.0,
        **_rss_figures(samples, outcome.seconds),
        "note": "loopback, one machine: the server (SQLite, embedded broker) in its own process, "
        "the simulator and the WebSocket clients in this one",
    }
