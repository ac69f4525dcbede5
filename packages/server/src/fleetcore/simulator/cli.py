"""`fleetcore simulate`: provision sim-0001… and run them against a running platform.

Devices are made through the database `fleetcore serve` uses (the settings it reads), like
`fleetcore export|import`; readings go over the network to --url / --mqtt-url.
Heavy modules are imported inside the command so `fleetcore --help` stays fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

if TYPE_CHECKING:
    from fleetcore.config import Settings
    from fleetcore.simulator.provision import Fleet
    from fleetcore.simulator.runner import Outcome, Target, Transport

DEFAULT_PROFILE = "Simulated devices"
DEFAULT_ORGANIZATION = "demo"
DEFAULT_DEVICES = {"sensors": 10, "vending": 4, "camera": 3}


class Kind(StrEnum):
    """What the simulated fleet is."""

    SENSORS = "sensors"  # telemetry over MQTT or HTTP
    VENDING = "vending"  # vending machines uploading DEX audits over HTTP
    CAMERA = "camera"  # gate cameras sending plate reads with images over HTTP


def _positive(value: float | None) -> float | None:
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be greater than 0 (got {value:g})")
    return value


def _load_settings() -> Settings:
    from fleetcore.config import ConfigError, load_settings
    from fleetcore.logging import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging("warning", settings.log_format)  # the status line, not info lines
    return settings


def local_address(host: str) -> str:
    """An address to reach a server bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def simulate(
    devices: Annotated[
        int | None,
        typer.Option(
            "--devices",
            min=1,
            max=10_000,
            help=(
                "how many devices (sim-0001…; vending: VSIM-0001…; camera: LPR-0001…) "
                "[default: 10; vending 4; camera 3]"
            ),
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            callback=_positive,
            help="readings per second, the whole fleet (camera: plate reads per second)",
        ),
    ] = 10.0,
    mqtt: Annotated[
        bool, typer.Option("--mqtt/--http", help="MQTT (one connection per device) or HTTP")
    ] = True,
    profile: Annotated[
        str, typer.Option(help="device profile name (created with the simulator's keys if absent)")
    ] = DEFAULT_PROFILE,
    organization: Annotated[
        str, typer.Option(help="organization slug (created if absent)")
    ] = DEFAULT_ORGANIZATION,
    duration: Annotated[
        float | None,
        typer.Option(callback=_positive, help="seconds to run (default: until Ctrl-C)"),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="the platform's HTTP URL (default: the local server)")
    ] = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="its MQTT broker, mqtt://host:port (default: local)")
    ] = None,
    seed: Annotated[
        int, typer.Option(help="seed of the signal models (same seed, same values)")
    ] = 0,
    kind: Annotated[
        Kind,
        typer.Option(
            help="sensors (telemetry), vending (DEX audits over HTTP) or camera (plate reads "
            "with images over HTTP)"
        ),
    ] = Kind.SENSORS,
    speed: Annotated[
        float,
        typer.Option(
            callback=_positive,
            help="vending: simulated seconds per real second (3600: an hour a second)",
        ),
    ] = 3600.0,
) -> None:
    """Simulate a fleet: sensors (diurnal cycles, noise, drift and faults, at a total rate of
    readings) or vending machines (sales by the hour, a DEX audit every few hours)."""
    settings = _load_settings()
    host = local_address(settings.host)
    devices = devices or DEFAULT_DEVICES[kind.value]
    if kind is Kind.VENDING:
        from fleetcore.simulator.vending_cli import simulate_vending

        simulate_vending(
            settings,
            organization=organization,
            count=devices,
            http_url=url or f"http://{host}:{settings.port}",
            duration=duration,
            seed=seed,
            speed=speed,
        )
        return
    if kind is Kind.CAMERA:
        from fleetcore.simulator.camera_fleet import simulate_cameras

        simulate_cameras(
            settings,
            organization=organization,
            count=devices,
            http_url=url or f"http://{host}:{settings.port}",
            rate=rate,
            duration=duration,
            seed=seed,
        )
        return
    from fleetcore.errors import DomainError
    from fleetcore.simulator.runner import Target, Transport

    target = Target(
        http_url=url or f"http://{host}:{settings.port}",
        mqtt_url=mqtt_url
        or f"mqtt://{local_address(settings.mqtt_host or host)}:{settings.mqtt_port}",
    )
    transport = Transport.MQTT if mqtt else Transport.HTTP
    try:
        fleet = asyncio.run(_provision(settings, organization, devices, profile, rate))
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{len(fleet.devices)} devices in organization {organization!r}, profile {profile!r} "
        f"({fleet.created} created, {fleet.reused} reused); {transport.value} to "
        f"{target.mqtt_url if mqtt else target.http_url}"
    )
    for warning in fleet.warnings:
        typer.echo(f"warning: {warning}", err=True)
    outcome = asyncio.run(_run(fleet, rate, transport, target, duration, seed))
    from fleetcore.simulator.status import summary

    typer.echo(summary(outcome, rate))
    if outcome.refused and len(outcome.refused) == len(fleet.devices):
        typer.echo(
            f"fleetcore: no device could connect: {outcome.refused[0]}\n"
            "(the server at --url / --mqtt-url must use the database these settings name: "
            "FLEETCORE_DATA_DIR or FLEETCORE_DATABASE_URL)",
            err=True,
        )
        raise typer.Exit(1)


async def _provision(
    settings: Settings, organization: str, count: int, profile: str, rate: float
) -> Fleet:
    from fleetcore.db import Database
    from fleetcore.migrate import upgrade
    from fleetcore.simulator.provision import provision
    from fleetcore.simulator.runner import readings_per_round

    database = Database.from_url(settings.resolved_database_url, pool_size=2)
    try:
        if settings.migrate_on_start:  # as `serve` would before writing
            await upgrade(database)
        # Each device sends rate / (readings a round of the fleet) messages a second.
        per_device = rate / readings_per_round(count)
        return await provision(
            database,
            organization=organization,
            count=count,
            profile=profile,
            messages_per_s=per_device,
        )
    finally:
        await database.close()


async def _run(
    fleet: Fleet,
    rate: float,
    transport: Transport,
    target: Target,
    duration: float | None,
    seed: int,
) -> Outcome:
    from rich.console import Console

    from fleetcore.simulator.runner import Simulation
    from fleetcore.simulator.status import StatusLine

    simulation = Simulation(fleet.devices, rate=rate, transport=transport, target=target, seed=seed)
    stop_on_signals(simulation)
    done = asyncio.Event()
    status = asyncio.create_task(StatusLine(simulation, Console(stderr=True)).run(done))
    try:
        return await simulation.run(duration)
    finally:
        done.set()
        await status


class Stoppable(Protocol):
    """A run that ends when its `stop` event is set."""

    stop: asyncio.Event


def stop_on_signals(simulation: Stoppable) -> None:
    """Ctrl-C (or SIGTERM) stops sending, waits for what is in flight, then disconnects;
    a second Ctrl-C interrupts that wait."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def stop() -> None:
        simulation.stop.set()
        for sig in signals:  # back to the defaults: a second signal ends the process
            loop.remove_signal_handler(sig)

    for sig in signals:
        # No signal handlers on this platform (Windows) or off the main thread: Ctrl-C
        # then ends the process the default way.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop)
