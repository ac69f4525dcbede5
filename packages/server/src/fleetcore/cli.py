"""The `fleetcore` command: serve, database migrations, version.

Heavy modules are imported inside the commands so `--version` and `--help` answer fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetcore import __version__
from fleetcore.config import ConfigError, Settings, load_settings
from fleetcore.logging import configure_logging

app = typer.Typer(
    help="Fleetcore IoT platform. Settings come from options, FLEETCORE_* variables, "
    "or a TOML file named by FLEETCORE_CONFIG_FILE (in that order of precedence).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetcore {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Fleetcore IoT platform."""


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="HTTP bind address (env FLEETCORE_HOST, default 127.0.0.1)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="HTTP port (env FLEETCORE_PORT, default 8000)")
    ] = None,
    mqtt_port: Annotated[
        int | None,
        typer.Option(help="embedded MQTT broker port (env FLEETCORE_MQTT_PORT, default 1883)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="data directory for SQLite and state (env FLEETCORE_DATA_DIR, default ./var)"
        ),
    ] = None,
) -> None:
    """Start the platform: HTTP API and pages, MQTT, background jobs."""
    settings = _settings(host=host, port=port, mqtt_port=mqtt_port, data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    from fleetcore.server import build_server

    server = build_server(settings)
    server.run()
    if not server.started:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    from fleetcore import migrate
    from fleetcore.db import Database

    async def run() -> None:
        database = Database.from_url(settings.resolved_database_url)
        try:
            await migrate.upgrade(database, revision)
            current = await migrate.current_revisions(database)
        finally:
            await database.close()
        typer.echo(f"database at revision {', '.join(sorted(current)) or '(none)'}")

    asyncio.run(run())


@db_app.command("current")
def db_current() -> None:
    """Print the database's revision and whether it is the latest."""
    settings = _settings()

    from fleetcore import migrate
    from fleetcore.db import Database

    async def run() -> None:
        database = Database.from_url(settings.resolved_database_url)
        try:
            current = await migrate.current_revisions(database)
        finally:
            await database.close()
        state = "current" if current == migrate.head_revisions() else "behind"
        typer.echo(f"{', '.join(sorted(current)) or '(none)'} ({state})")

    asyncio.run(run())


def main() -> None:
    """Console-script entry point."""
    app()
