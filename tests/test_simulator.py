"""`fleetcore simulate`: signal models, provisioning, runs over MQTT and HTTP, the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from statistics import mean

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, text

from fleetcore.db import Database
from fleetcore.demo import DEMO_RULES, ensure_demo_rules
from fleetcore.devices.models import Device, DeviceCredential, DeviceProfile
from fleetcore.errors import Invalid
from fleetcore.simulator.inprocess import DEMO_DEVICES
from fleetcore.simulator.provision import Fleet, provision
from fleetcore.simulator.runner import Outcome, Simulation, Target, Transport
from fleetcore.simulator.signals import (
    CHANNELS,
    DAY_S,
    NO_FAULTS,
    DeviceKind,
    Fault,
    FaultRates,
    SignalModel,
    profile_keys,
)
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.postgres import free_port
from tests.support.serving import serving
from tests.support.wait import wait_until

T0 = 1_795_300_000.0  # a fixed epoch second, so sample times do not depend on the clock


def _series(model: SignalModel, count: int, step: float = 60.0) -> list[dict[str, float]]:
    return [model.sample(T0 + i * step).values for i in range(count)]


# -- signal models ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_same_seed_same_signal(kind: DeviceKind) -> None:
    first = _series(SignalModel(kind, seed=7), 500)
    assert first == _series(SignalModel(kind, seed=7), 500)
    assert first != _series(SignalModel(kind, seed=8), 500)


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_daily_cycle_repeats_every_24_hours_and_peaks_at_its_hour(kind: DeviceKind) -> None:
    for channel in CHANNELS[kind]:
        for t in (T0, T0 + 3_600, T0 + 12_345):
            assert channel.cycle(t) == pytest.approx(channel.cycle(t + DAY_S))
        assert channel.cycle(channel.peak_hour * 3_600) == pytest.approx(
            channel.base + channel.amplitude
        )
    # Hourly samples over two weeks: every channel is highest near its peak hour and lowest
    # twelve hours later, noise and drift notwithstanding.
    model = SignalModel(kind, seed=3, faults=NO_FAULTS)
    midnight = T0 - T0 % DAY_S
    by_hour: dict[int, list[dict[str, float]]] = {}
    for i in range(24 * 14):
        by_hour.setdefault(i % 24, []).append(model.sample(midnight + i * 3_600).values)
    for channel in CHANNELS[kind]:
        means = {h: mean(v[channel.key] for v in samples) for h, samples in by_hour.items()}
        peak, trough = round(channel.peak_hour) % 24, round(channel.peak_hour + 12) % 24
        assert means[peak] - means[trough] > 1.5 * channel.amplitude
        assert max(means, key=means.__getitem__) in {(peak + d) % 24 for d in (-2, -1, 0, 1, 2)}


def test_faults_occur_at_their_configured_probability() -> None:
    samples = 40_000
    rates = FaultRates(spike=0.05, stuck=0.0, dropout=0.1)
    model = SignalModel(DeviceKind.ENVIRONMENT, seed=1, faults=rates)
    faults = [model.sample(T0 + i).fault for i in range(samples)]
    assert faults.count(Fault.DROPOUT) / samples == pytest.approx(0.1, abs=0.01)
    assert faults.count(Fault.SPIKE) / samples == pytest.approx(0.05, abs=0.006)
    assert NO_FAULTS.spike == NO_FAULTS.stuck == NO_FAULTS.dropout == 0
    clean = SignalModel(DeviceKind.MACHINE, seed=1, faults=NO_FAULTS)
    assert all(clean.sample(T0 + i).fault is None for i in range(5_000))


def test_a_stuck_value_repeats_for_its_length_and_starts_at_its_probability() -> None:
    rates = FaultRates(spike=0.0, stuck=0.02, dropout=0.0, stuck_samples=5)
    model = SignalModel(DeviceKind.MACHINE, seed=2, faults=rates)
    samples = [model.sample(T0 + i) for i in range(40_000)]
    starts = [
        i
        for i in range(1, len(samples))
        if samples[i].fault is Fault.STUCK and samples[i - 1].fault is not Fault.STUCK
    ]
    for i in starts:
        run = samples[i : i + 5]
        assert all(s.fault is Fault.STUCK for s in run)
        assert all(s.values == samples[i - 1].values for s in run)
    # Each start draws once; the four samples after it draw nothing.
    draws = len(samples) - 4 * len(starts)
    assert len(starts) / draws == pytest.approx(0.02, abs=0.004)


@pytest.mark.parametrize("kind", list(DeviceKind))
def test_values_stay_within_physical_bounds(kind: DeviceKind) -> None:
    rates = FaultRates(spike=0.6, stuck=0.1, dropout=0.1)
    model = SignalModel(kind, seed=5, faults=rates)
    seen = {c.key: [] for c in CHANNELS[kind]}  # type: dict[str, list[float]]
    for i in range(20_000):
        for key, value in model.sample(T0 + i * 97.0).values.items():
            seen[key].append(value)
    for channel in CHANNELS[kind]:
        assert channel.low <= min(seen[channel.key])
        assert max(seen[channel.key]) <= channel.high
    declared = {k["key"]: (k["min"], k["max"]) for k in profile_keys()}
    assert all(declared[c.key] == (c.low, c.high) for c in CHANNELS[kind])


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="within"):
        FaultRates(spike=-0.1)
    with pytest.raises(ValueError, match="more than 1"):
        FaultRates(spike=0.6, dropout=0.6)


# -- provisioning -----------------------------------------------------------------------


async def _count(database: Database, query: object) -> int:
    async with database.session() as session:
        return int(await session.scalar(query) or 0)  # type: ignore[call-overload]


async def test_provisioning_reuses_devices_and_makes_no_duplicates(
    live_database: Database,
) -> None:
    first = await provision(live_database, organization="sim-org", count=3, profile="Sim")
    second = await provision(live_database, organization="sim-org", count=5, profile="Sim")
    again = await provision(live_database, organization="sim-org", count=5, profile="Sim")
    assert (first.created, first.reused) == (3, 0)
    assert (second.created, second.reused) == (2, 3)
    assert (again.created, again.reused) == (0, 5)
    assert [d.name for d in again.devices] == [f"sim-{i:04d}" for i in range(1, 6)]
    assert [d.id for d in second.devices[:3]] == [d.id for d in first.devices]
    assert [d.id for d in again.devices] == [d.id for d in second.devices]
    assert first.organization_id == again.organization_id
    assert first.profile_id == again.profile_id
    assert {d.token for d in again.devices}.isdisjoint(d.token for d in second.devices)
    devices = select(func.count()).select_from(Device)
    assert await _count(live_database, devices) == 5
    profiles = select(func.count()).select_from(DeviceProfile)
    assert await _count(live_database, profiles) == 1
    live_tokens = (
        select(func.count())
        .select_from(DeviceCredential)
        .where(DeviceCredential.revoked_at.is_(None))
    )
    assert await _count(live_database, live_tokens) == 5  # earlier runs' tokens revoked
    assert again.warnings == []


async def test_provisioning_refuses_a_profile_that_would_refuse_the_readings(
    live_database: Database,
) -> None:
    fleet = await provision(live_database, organization="sim-org", count=1, profile="Sim")
    async with live_database.session() as session:
        session.add(
            DeviceProfile(
                organization_id=fleet.organization_id,
                name="Thermometers",
                telemetry_keys=[{"key": "temperature", "type": "number"}],
            )
        )
        await session.commit()
    with pytest.raises(Invalid, match="humidity"):
        await provision(live_database, organization="sim-org", count=1, profile="Thermometers")
    slow = await provision(
        live_database, organization="sim-org", count=1, profile="Sim", messages_per_s=1e6
    )
    assert "dead letters" in slow.warnings[0]


# -- runs against a real app ------------------------------------------------------------


async def _stored(database: Database) -> int:
    return await _count(database, text("SELECT count(*) FROM ts_num"))


async def _run_until(simulation: Simulation, readings: int) -> Outcome:
    running = asyncio.create_task(simulation.run())
    try:
        await wait_until(lambda: simulation.stats.acked >= readings or running.done(), within=60)
    finally:
        simulation.stop.set()
    return await running


def _check(outcome: Outcome, fleet: Fleet) -> None:
    assert outcome.refused == []
    assert outcome.stats.errors == 0
    assert outcome.unacked == 0
    assert outcome.stats.acked == outcome.stats.sent > 0
    assert outcome.stats.samples >= len(fleet.devices)


async def test_mqtt_run_stores_exactly_what_was_acknowledged(
    mqtt_app: FastAPI, live_database: Database
) -> None:
    fleet = await provision(live_database, organization="sim-org", count=8, profile="Sim")
    port = mqtt_app.state.settings.mqtt_port
    simulation = Simulation(
        fleet.devices,
        rate=200,
        transport=Transport.MQTT,
        target=Target(mqtt_url=f"mqtt://127.0.0.1:{port}"),
        seed=11,
    )
    outcome = await _run_until(simulation, 100)
    _check(outcome, fleet)
    assert await _stored(live_database) == outcome.stats.acked
    await wait_until(lambda: not mqtt_app.state.transport.online())  # every device left


async def test_http_run_stores_exactly_what_was_acknowledged(
    live_app: FastAPI, live_database: Database
) -> None:
    fleet = await provision(live_database, organization="sim-org", count=6, profile="Sim")
    async with serving(live_app) as address:
        simulation = Simulation(
            fleet.devices,
            rate=200,
            transport=Transport.HTTP,
            target=Target(http_url=f"http://{address}"),
            seed=12,
        )
        outcome = await _run_until(simulation, 100)
    _check(outcome, fleet)
    assert await _stored(live_database) == outcome.stats.acked


async def test_a_refused_token_is_reported_not_raised(
    mqtt_app: FastAPI, live_database: Database
) -> None:
    fleet = await provision(live_database, organization="sim-org", count=2, profile="Sim")
    await provision(live_database, organization="sim-org", count=1, profile="Sim")  # rotates
    port = mqtt_app.state.settings.mqtt_port
    simulation = Simulation(
        fleet.devices,
        rate=50,
        transport=Transport.MQTT,
        target=Target(mqtt_url=f"mqtt://127.0.0.1:{port}"),
    )
    outcome = await _run_until(simulation, 10)
    assert len(outcome.refused) == 1
    assert "sim-0001" in outcome.refused[0]
    assert outcome.stats.acked == await _stored(live_database)


# -- the command ------------------------------------------------------------------------


def _simulate(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = fleetcore_env()
    env["FLEETCORE_DATA_DIR"] = str(data_dir)
    return forkserver.run(
        [FLEETCORE, "simulate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--devices", "0"), "--devices"),
        (("--devices", "-3"), "--devices"),
        (("--rate", "-1"), "--rate"),
        (("--rate", "0"), "--rate"),
        (("--duration", "0"), "--duration"),
        (("--devices", "many"), "--devices"),
    ],
)
def test_bad_options_are_a_usage_error(args: tuple[str, ...], named: str, tmp_path: Path) -> None:
    result = _simulate(*args, data_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"Invalid value for '{named}'" in result.stderr
    assert not (tmp_path / "fleetcore.db").exists()  # refused before touching anything


def test_an_unsuitable_profile_is_a_usage_error(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-c", _MAKE_PROFILE, str(tmp_path / "fleetcore.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    result = _simulate("--profile", "Thermometers", "--duration", "1", data_dir=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "'Thermometers' does not declare the number keys 'temperature', 'humidity'" in (
        result.stderr
    )


_MAKE_PROFILE = """
import asyncio, sys
from fleetcore import migrate
from fleetcore.db import Database
from fleetcore.devices.models import DeviceProfile
from fleetcore.simulator.provision import provision

async def main():
    database = Database.from_url(f"sqlite+aiosqlite:///{sys.argv[1]}")
    await migrate.upgrade(database)
    fleet = await provision(database, organization="demo", count=1, profile="Sim")
    async with database.session() as session:
        session.add(DeviceProfile(organization_id=fleet.organization_id, name="Thermometers",
                                  telemetry_keys=[{"key": "humidity", "type": "string"}]))
        await session.commit()
    await database.close()

asyncio.run(main())
"""


# -- `fleetcore serve --demo` (make run) ------------------------------------------------


def _sqlite_count(path: Path, query: str) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            return int(connection.execute(query).fetchone()[0])
    except sqlite3.OperationalError:  # not created or not migrated yet
        return 0


def _sqlite_rows(path: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        return list(connection.execute(query).fetchall())


def _serve_demo(tmp_path: Path, *args: str) -> tuple[forkserver.Process, int]:
    http_port = free_port()
    env = fleetcore_env()
    env.update(
        FLEETCORE_DATA_DIR=str(tmp_path),
        FLEETCORE_PORT=str(http_port),
        FLEETCORE_MQTT_PORT=str(free_port()),
        FLEETCORE_PASSWORD_HASH_TIME_COST="1",
        FLEETCORE_PASSWORD_HASH_MEMORY_KIB="1024",
    )
    process = forkserver.popen(
        [FLEETCORE, "serve", "--demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, http_port


def _stop(process: forkserver.Process) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # Ctrl-C on `make run`
    output, _ = process.communicate(timeout=60)
    return output


async def test_serve_demo_runs_simulated_devices_and_stops_cleanly(tmp_path: Path) -> None:
    database = tmp_path / "fleetcore.db"
    process, _ = _serve_demo(tmp_path)
    try:
        # Every simulated device has sent at least once.
        await wait_until(
            lambda: (
                (
                    _sqlite_count(  # the simulated ones: the motors' and vending history write too
                        database,
                        "SELECT count(DISTINCT s.device_id) FROM ts_series s "
                        "JOIN devices d ON d.id = s.device_id WHERE d.name LIKE 'sim-%'",
                    )
                    >= DEMO_DEVICES
                    # and the demo's gate cameras have sent a read with its image
                    and _sqlite_count(database, "SELECT count(*) FROM plate_reads") > 0
                )
                or process.poll() is not None
            ),
            within=60,
            every=0.2,
        )
    finally:
        output = _stop(process)
    assert process.returncode in (0, 130, -signal.SIGINT), output  # uvicorn re-raises it
    assert f"Simulating {DEMO_DEVICES} devices" in output
    assert "Traceback" not in output
    stopped = [json.loads(line) for line in output.splitlines() if '"simulator stopped"' in line]
    assert len(stopped) == 1, output
    assert stopped[0]["errors"] == 0
    assert stopped[0]["refused"] == 0
    # The simulated sensors' readings (the demo's vending machines write sales series too).
    sensors = (
        "SELECT count(*) FROM ts_num WHERE series_id IN (SELECT s.id FROM ts_series s "
        "JOIN devices d ON d.id = s.device_id WHERE d.name LIKE 'sim-%')"
    )
    assert stopped[0]["acked"] == _sqlite_count(database, sensors) > 0
    names = _sqlite_count(database, "SELECT count(*) FROM devices WHERE name LIKE 'sim-%'")
    assert names == DEMO_DEVICES
    rules = _sqlite_count(database, "SELECT count(*) FROM rules WHERE enabled")
    # The alerts page has rules to fire, + the motors' health rule and the cameras' watchlist.
    assert rules == len(DEMO_RULES) + 2
    plate_reads = _sqlite_count(database, "SELECT count(*) FROM plate_reads")
    with_images = _sqlite_count(
        database, "SELECT count(*) FROM plate_reads WHERE media_id IS NOT NULL"
    )
    assert plate_reads == with_images > 0  # the gate cameras' reads, each with its image


async def test_demo_rules_are_created_once(live_database: Database) -> None:
    fleet = await provision(live_database, organization="demo", count=1, profile="Sim")
    first = await ensure_demo_rules(live_database, fleet.organization_id, fleet.profile_id)
    again = await ensure_demo_rules(live_database, fleet.organization_id, fleet.profile_id)
    assert (first, again) == (len(DEMO_RULES), 0)


async def test_serve_demo_without_simulation(tmp_path: Path) -> None:
    process, port = _serve_demo(tmp_path, "--no-simulate")

    async def healthy() -> bool:
        try:
            async with local_client() as http:
                answer = await http.get(f"http://127.0.0.1:{port}/health")
                return answer.status_code == 200
        except httpx.TransportError:
            return process.poll() is not None

    try:
        await wait_until(healthy, within=60, every=0.2)
    finally:
        output = _stop(process)
    assert process.returncode in (0, 130, -signal.SIGINT), output  # uvicorn re-raises it
    assert "Simulating" not in output
    # The demo's three devices, its vending machines (issue 15: simulator.vending_demo), its
    # motors (issue 17: simulator.machines_demo) and its gate cameras (issue 19).
    devices = "SELECT count(*) FROM devices"
    assert _sqlite_count(tmp_path / "fleetcore.db", devices) == 3 + 4 + 4 + 3
    # The simulated fleet's demo rules come with the simulation; the motors' health rule
    # (simulator.machines_demo) with the motors, the watchlist's with the cameras.
    rules = "SELECT name FROM rules ORDER BY name"
    assert _sqlite_rows(tmp_path / "fleetcore.db", rules) == [
        ("Motor health low",),
        ("Watchlist: Wanted vehicles",),
    ]


async def test_a_device_dropped_mid_run_counts_errors_and_the_rest_carry_on(
    mqtt_app: FastAPI, live_database: Database
) -> None:
    fleet = await provision(live_database, organization="sim-org", count=3, profile="Sim")
    port = mqtt_app.state.settings.mqtt_port
    simulation = Simulation(
        fleet.devices,
        rate=300,
        transport=Transport.MQTT,
        target=Target(mqtt_url=f"mqtt://127.0.0.1:{port}"),
    )
    running = asyncio.create_task(simulation.run())
    try:
        # Every device connected (a device whose token is revoked while it connects is
        # refused, not dropped) and the fleet sending.
        await wait_until(
            lambda: simulation.stats.connected == 3 and simulation.stats.acked >= 30, within=60
        )
        # A new token for sim-0001 revokes the one it is connected with: the platform drops it.
        await provision(live_database, organization="sim-org", count=1, profile="Sim")
        await wait_until(lambda: simulation.stats.errors > 0, within=60)
        acked = simulation.stats.acked
        await wait_until(lambda: simulation.stats.acked >= acked + 30, within=60)
    finally:
        simulation.stop.set()
    outcome = await running
    assert outcome.stats.connected == 0
    assert outcome.unacked == 0  # what sim-0001 had in flight when dropped is an error
    stored, stats = await _stored(live_database), outcome.stats
    # In flight when dropped: stored or not, but never acknowledged.
    assert stats.acked <= stored <= stats.acked + stats.errors_after_send
