"""`fleetcore mqtt sync`: the broker's dynamic-security clients against the devices.

Reads the database with the settings `fleetcore serve` uses and talks to the broker as the
platform client of FLEETCORE_MQTT_URL (a dynsec admin). Exit 0 when in sync, 1 when
differences remain (always, with --dry-run, if there are any), 2 on a configuration error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fleetcore.broker_sync.reconcile import Finding
    from fleetcore.config import Settings

mqtt_app = typer.Typer(
    help="An external MQTT broker (Mosquitto dynamic security).", no_args_is_help=True
)


def _settings() -> Settings:
    from fleetcore.config import ConfigError, load_settings
    from fleetcore.logging import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.mqtt_url is None:
        typer.echo("fleetcore: FLEETCORE_MQTT_URL is not set (no external broker)", err=True)
        raise typer.Exit(2)
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def _run(settings: Settings, *, fix: bool) -> list[Finding]:
    from fleetcore.broker_sync.dynsec import DynsecClient
    from fleetcore.broker_sync.reconcile import reconcile
    from fleetcore.db import Database
    from fleetcore.external_broker.connection import BrokerUrl

    url = BrokerUrl.from_settings(settings)
    database = Database.from_url(settings.resolved_database_url, pool_size=2)
    dynsec = DynsecClient(url.client("dynsec-cli"), url.host, url.port)
    await dynsec.start()
    try:
        await dynsec.wait_connected(10.0)
        return await reconcile(database, dynsec, fix=fix)
    finally:
        await dynsec.stop()
        await database.close()


@mqtt_app.command("sync")
def sync(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report the differences, change nothing")
    ] = False,
) -> None:
    """Compare every live device with the broker's clients; fix what can be fixed."""
    from rich.console import Console
    from rich.table import Table

    from fleetcore.broker_sync.dynsec import DynsecError, DynsecUnavailable

    settings = _settings()
    try:
        findings = asyncio.run(_run(settings, fix=not dry_run))
    except (DynsecUnavailable, DynsecError) as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(1) from None
    console = Console()
    if not findings:
        console.print("in sync: every live device has its client, nothing stale")
        return
    table = Table(title="dynamic security vs. devices" + (" (dry run)" if dry_run else ""))
    for column in ("client (device id)", "difference", "outcome"):
        table.add_column(column)
    for finding in findings:
        outcome = "fixed" if finding.fixed else ("would fix" if dry_run else "not fixed")
        if finding.note:
            outcome = finding.note if not finding.fixed else f"{outcome} ({finding.note})"
        table.add_row(finding.username, str(finding.difference), outcome)
    console.print(table)
    remaining = [f for f in findings if not f.fixed]
    console.print(f"{len(findings)} difference(s), {len(remaining)} remaining")
    if remaining:
        raise typer.Exit(1)
