"""`fleetcore simulate` at fleet scale: 200 devices over MQTT against a real `fleetcore serve`.

The server runs as its own process (SQLite, embedded broker), as `make run` starts it. The
simulator runs here, in this process: devices sim-0001… are provisioned through the same
database (as the `fleetcore simulate` command does), each opens its own MQTT connection with
its token and publishes QoS 1 at its share of the requested total rate, with the default
signal faults (dropouts send nothing, so a little less than requested is sent). After a
clean stop of the server, the rows in ts_num are counted: they must equal the readings
acknowledged by PUBACK.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.postgres import free_port

from bench.mqtt_ingest import _env, _wait_for_mqtt, cpu_seconds
from bench.telemetry_http import serving
from fleetcore.db import Database
from fleetcore.simulator.provision import provision
from fleetcore.simulator.runner import (
    Outcome,
    Simulation,
    Target,
    Transport,
    readings_per_round,
)

DEVICES = 200
RATE = 1_200.0  # readings/s requested for the whole fleet
SECONDS = 20.0


async def _simulate(data_dir: Path, mqtt_port: int) -> tuple[Outcome, float]:
    """Provision through the server's database, then run the fleet for SECONDS; returns
    the outcome and the CPU seconds this process spent simulating."""
    database = Database.from_url(f"sqlite+aiosqlite:///{data_dir / 'fleetcore.db'}")
    try:
        fleet = await provision(
            database,
            organization="bench",
            count=DEVICES,
            profile="Simulated devices",
            messages_per_s=RATE / readings_per_round(DEVICES),
        )
    finally:
        await database.close()
    simulation = Simulation(
        fleet.devices,
        rate=RATE,
        transport=Transport.MQTT,
        target=Target(mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}"),
        seed=1,
    )
    started: dict[str, float] = {}

    def on_start() -> None:
        started["cpu"] = time.process_time()

    outcome = await simulation.run(SECONDS, on_start=on_start)
    return outcome, time.process_time() - started.get("cpu", 0.0)


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def run() -> dict[str, Any]:
    """200 simulated devices at RATE readings/s for SECONDS over MQTT; acked against stored."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "fleet"
        mqtt_port, http_port = free_port(), free_port()
        env = _env(mqtt_port, FLEETCORE_DATA_DIR=str(data_dir))
        with serving(env, http_port, Path(tmp) / "serve.log") as process:
            _wait_for_mqtt(mqtt_port)
            server_cpu = cpu_seconds(process.pid)
            outcome, simulator_cpu = asyncio.run(_simulate(data_dir, mqtt_port))
            server_cpu = cpu_seconds(process.pid) - server_cpu
        db = data_dir / "fleetcore.db"
        stored, dead_letters = _count(db, "ts_num"), _count(db, "dead_letters")
    stats = outcome.stats
    return {
        "name": "fleet_simulation",
        "devices": DEVICES,
        "transport": "mqtt, one connection per device, QoS 1",
        "seconds": round(outcome.seconds, 2),
        "requested_readings_per_s": RATE,
        # What the schedule produced: sent plus the readings simulated dropouts held back
        # (every kind has two channels), against which `requested` is to be compared.
        "scheduled_readings_per_s": round(
            (stats.sent + 2 * stats.faults.get("dropout", 0)) / outcome.seconds, 1
        ),
        "sent_readings_per_s": round(stats.sent / outcome.seconds, 1),
        "achieved_readings_per_s": round(outcome.achieved_per_s, 1),
        "sent_readings": stats.sent,
        "acked_readings": stats.acked,
        "stored_readings": stored,
        "acked_equals_stored": stats.acked == stored,
        "errors": stats.errors,
        "unacked_at_stop": outcome.unacked,
        "devices_refused": len(outcome.refused),
        "dead_letters": dead_letters,
        "faults": dict(sorted(stats.faults.items())),
        "server_cores_used": round(server_cpu / outcome.seconds, 2),
        "simulator_cores_used": round(simulator_cpu / outcome.seconds, 2),
        "note": "loopback; the server (SQLite, embedded broker) and the simulator are two "
        "processes on the same machine; achieved = acknowledged readings per second of the run",
    }
