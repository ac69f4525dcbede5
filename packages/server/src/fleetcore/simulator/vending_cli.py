"""`fleetcore simulate --kind vending`: provision the vending fleet, run it over HTTP."""

from __future__ import annotations

import asyncio

import typer

from fleetcore.config import Settings
from fleetcore.simulator.vending_fleet import VendingFleet
from fleetcore.simulator.vending_runner import DexStats


def simulate_vending(
    settings: Settings,
    *,
    organization: str,
    count: int,
    http_url: str,
    duration: float | None,
    seed: int,
    speed: float,
) -> None:
    """Provision (or reuse) `count` machines and run them until Ctrl-C or `duration`."""
    from fleetcore.errors import DomainError

    try:
        fleet = asyncio.run(_provision(settings, organization, count, seed))
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{len(fleet.machines)} vending machines in organization {organization!r} "
        f"({fleet.created} created, {fleet.reused} reused; {fleet.products_created} products "
        f"created); DEX audits over HTTP to {http_url} at {speed:g}x"
    )
    stats = asyncio.run(_run(fleet, http_url, duration, seed, speed))
    typer.echo(
        f"reads {stats.reads:,} · stored {stats.stored:,} · duplicates {stats.duplicates:,} · "
        f"damaged {stats.damaged:,} · refused {stats.refused:,}"
    )
    if stats.refused and not stats.stored:
        typer.echo(
            f"fleetcore: no audit was accepted: {stats.last_error}\n"
            "(the server at --url must use the database these settings name: "
            "FLEETCORE_DATA_DIR or FLEETCORE_DATABASE_URL)",
            err=True,
        )
        raise typer.Exit(1)


async def _provision(settings: Settings, organization: str, count: int, seed: int) -> VendingFleet:
    from fleetcore.db import Database
    from fleetcore.migrate import upgrade
    from fleetcore.simulator.vending_fleet import provision_vending

    database = Database.from_url(settings.resolved_database_url, pool_size=2)
    try:
        if settings.migrate_on_start:  # as `serve` would before writing
            await upgrade(database)
        return await provision_vending(database, organization=organization, count=count, seed=seed)
    finally:
        await database.close()


async def _run(
    fleet: VendingFleet, http_url: str, duration: float | None, seed: int, speed: float
) -> DexStats:
    from rich.console import Console

    from fleetcore.simulator.cli import stop_on_signals
    from fleetcore.simulator.vending_runner import VendingSimulation, show_status

    simulation = VendingSimulation(fleet.machines, http_url=http_url, speed=speed, seed=seed)
    stop_on_signals(simulation)
    done = asyncio.Event()
    status = asyncio.create_task(show_status(simulation, Console(stderr=True), done))
    try:
        return await simulation.run(duration)
    finally:
        done.set()
        await status
