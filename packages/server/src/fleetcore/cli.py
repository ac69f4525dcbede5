"""The `fleetcore` command: serve, database migrations, backups, version.

Heavy modules are imported inside the commands so `--version` and `--help` answer fast.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetcore import __version__
from fleetcore.archive import cli as archive_cli
from fleetcore.backup import cli as backup_cli
from fleetcore.broker_sync import cli as broker_sync_cli
from fleetcore.config import ConfigError, Settings, load_settings
from fleetcore.logging import configure_logging
from fleetcore.simulator import cli as simulator_cli
from fleetcore.telemetry import cli as telemetry_cli
from fleetcore.vending import cli as vending_cli

if TYPE_CHECKING:
    from fleetcore.simulator.cameras_demo import DemoCameras, DemoCamerasRun
    from fleetcore.simulator.machines_demo import DemoMachines, DemoMachinesRun
    from fleetcore.simulator.provision import Fleet
    from fleetcore.simulator.runner import Simulation
    from fleetcore.simulator.vending_demo import DemoVending, DemoVendingRun

app = typer.Typer(
    help="Fleetcore IoT platform. Settings come from options, FLEETCORE_* variables, "
    "or a TOML file named by FLEETCORE_CONFIG_FILE (in that order of precedence).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
admin_app = typer.Typer(help="Platform administration.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(archive_cli.app, name="archive")


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
    demo: Annotated[
        bool, typer.Option(help="create a demo organization and print its admin's sign-in")
    ] = False,
    simulate: Annotated[
        bool,
        typer.Option(help="with --demo: run a few simulated devices in the server's process"),
    ] = True,
    role: Annotated[
        str | None,
        typer.Option(
            help="all (default): everything in one process; api: HTTP and WebSocket; ingest: "
            "device traffic (embedded broker or FLEETCORE_MQTT_URL); worker: periodic jobs and "
            "notifications. Roles other than all need PostgreSQL (env FLEETCORE_ROLE)"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="with --role api: this many api processes sharing the HTTP port "
            "(env FLEETCORE_WORKERS, default 1)"
        ),
    ] = None,
) -> None:
    """Start the platform: HTTP API and pages, MQTT, background jobs."""
    overrides: dict[str, Any] = {
        "host": host,
        "port": port,
        "mqtt_port": mqtt_port,
        "data_dir": data_dir,
        "role": role,
        "workers": workers,
    }
    settings = _settings(**overrides)
    configure_logging(settings.log_level, settings.log_format)
    try:
        settings.check_signing_key()
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.uses_development_key:
        typer.secho(
            "fleetcore: WARNING: development mode with the published secret key; "
            "do not expose this server",
            err=True,
            fg="red",
            bold=True,
        )
    if settings.workers > 1:
        if demo:
            typer.echo("fleetcore: --demo runs in one process; drop --workers", err=True)
            raise typer.Exit(2)
        from fleetcore.server import run_workers

        # The worker processes build their settings from the environment, options included.
        raise typer.Exit(run_workers(settings, overrides))
    prepared = _prepare_demo(settings, simulate=simulate) if demo else None
    # No garbage collection while the server's modules are imported and the app is built
    # (fleetcore.server.tune_gc then freezes what start-up made and enables collection).
    gc.disable()
    from fleetcore.server import build_server, tune_gc

    server = build_server(settings)
    tune_gc()
    if prepared is None:
        server.run()
    else:
        from fleetcore.simulator.inprocess import run_server_with

        fleet, vending, machines, cameras = prepared
        run_server_with(
            server,
            None if fleet is None else _demo_simulation(settings, fleet),
            _demo_vending(settings, vending, live=simulate),
            _demo_machines(settings, machines, live=simulate),
            _demo_cameras(settings, cameras, live=simulate),
        )
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


def _prepare_demo(
    settings: Settings, *, simulate: bool
) -> tuple[Fleet | None, DemoVending, DemoMachines, DemoCameras]:
    """The demo data, its sign-ins printed, and (with `simulate`) the simulated devices."""
    if settings.environment == "production":
        typer.echo(
            "fleetcore: --demo is refused in production (FLEETCORE_ENVIRONMENT=development "
            "for a demo)",
            err=True,
        )
        raise typer.Exit(2)
    from rich.console import Console
    from rich.panel import Panel

    from fleetcore.db import open_database
    from fleetcore.demo import DEMO_SLUG, ensure_demo, ensure_demo_rules
    from fleetcore.simulator import inprocess
    from fleetcore.simulator.cameras_demo import ensure_demo_cameras
    from fleetcore.simulator.cli import DEFAULT_PROFILE
    from fleetcore.simulator.machines_demo import ensure_demo_machines
    from fleetcore.simulator.provision import provision
    from fleetcore.simulator.runner import readings_per_round
    from fleetcore.simulator.vending_demo import ROUTE as VENDING_ROUTE
    from fleetcore.simulator.vending_demo import ensure_demo_vending

    async def run() -> tuple[str, str, str, Fleet | None, DemoVending, DemoMachines, DemoCameras]:
        database = open_database(settings)
        fleet = None
        try:
            login = await ensure_demo(database)
            vending = await ensure_demo_vending(database, organization=DEMO_SLUG)
            vending.admin_email = login.email
            machines = await ensure_demo_machines(database, organization=DEMO_SLUG)
            cameras = await ensure_demo_cameras(database, organization=DEMO_SLUG)
            if simulate:
                fleet = await provision(
                    database,
                    organization=DEMO_SLUG,
                    count=inprocess.DEMO_DEVICES,
                    profile=DEFAULT_PROFILE,
                    messages_per_s=inprocess.DEMO_RATE / readings_per_round(inprocess.DEMO_DEVICES),
                )
                await ensure_demo_rules(database, fleet.organization_id, fleet.profile_id)
        finally:
            await database.close()
        return login.email, login.password, login.device_token, fleet, vending, machines, cameras

    email, password, token, fleet, vending, machines, cameras = asyncio.run(run())
    wildcard = settings.host in ("0.0.0.0", "::")  # noqa: S104 (only choosing what to print)
    url = f"http://{'127.0.0.1' if wildcard else settings.host}:{settings.port}"
    Console().print(
        Panel.fit(
            f"[bold]Fleetcore demo[/bold]\n\n"
            f"Open      {url}/auth/login\n"
            f"Email     {email}\n"
            f"Password  {password}   (new on every start)\n"
            f"API docs  {url}/api/docs\n\n"
            f"Vending   {url}/vending   (driver's pick lists: {url}/vending/routes)\n"
            f"Driver    {vending.driver_email}\n"
            f"Password  {vending.driver_password}   (new on every start)\n\n"
            f"Machines  {url}/analytics   (recommendations: {url}/recommendations)\n"
            f"Cameras   {url}/plates   (watchlists: {url}/watchlists)",
            title="sign in",
        )
    )
    if token:
        typer.echo(
            "Send a reading as the demo boiler sensor (its token is new on every start):\n"
            f"curl -X POST {url}/api/v1/devices/me/telemetry -H 'X-Device-Token: {token}' "
            "-H 'Content-Type: application/json' -d '{\"temperature\": 21.5}'\n"
        )
    if fleet is not None:
        typer.echo(
            f"Simulating {len(fleet.devices)} devices (sim-0001…) at {inprocess.DEMO_RATE:g} "
            "readings/s once the server is up; --no-simulate turns them off, "
            "`fleetcore simulate` runs a bigger fleet.\n"
        )
    typer.echo(
        f"Vending: {len(vending.fleet.machines)} machines on route {VENDING_ROUTE!r}; their "
        "history (30 days of DEX audits, once per data directory) is accounted once the "
        "server answers"
        + (", then they send a DEX audit about once a minute.\n" if simulate else ".\n")
    )
    typer.echo(
        f"Machines: {len(machines.machines)} press line motors watched by analytics "
        f"({machines.degrading.spec.name} is wearing out); their history (8 days, once per "
        "data directory) is sent once the server answers"
        + (", then they report every few seconds.\n" if simulate else ".\n")
    )
    typer.echo(
        f"Cameras: {len(cameras.fleet.cameras)} gate cameras reading licence plates; their "
        "history (3 hours of reads with images, once per data directory) is sent once the "
        "server answers"
        + (", then one reads a plate every few seconds" if simulate else "")
        + (
            f"; reads of plates on the watchlist {cameras.watchlist!r} raise alerts.\n"
            if cameras.watchlist
            else ".\n"
        )
    )
    return fleet, vending, machines, cameras


def _demo_simulation(settings: Settings, fleet: Fleet) -> Simulation:
    """The demo fleet against this very server: MQTT when its broker is on, else HTTP."""
    from fleetcore.simulator import inprocess
    from fleetcore.simulator.cli import local_address
    from fleetcore.simulator.runner import Simulation, Target, Transport

    host = local_address(settings.host)
    target = Target(
        http_url=f"http://{host}:{settings.port}",
        mqtt_url=f"mqtt://{local_address(settings.mqtt_host or host)}:{settings.mqtt_port}",
    )
    transport = Transport.MQTT if settings.mqtt_port else Transport.HTTP
    return Simulation(fleet.devices, rate=inprocess.DEMO_RATE, transport=transport, target=target)


def _demo_vending(settings: Settings, vending: DemoVending, *, live: bool) -> DemoVendingRun:
    """The demo's vending history, then (`live`) its machines against this very server."""
    from fleetcore.db import open_database
    from fleetcore.simulator.cli import local_address
    from fleetcore.simulator.vending_demo import DemoVendingRun

    return DemoVendingRun(
        vending,
        open_database=lambda: open_database(settings),
        admin_email=vending.admin_email,
        http_url=f"http://{local_address(settings.host)}:{settings.port}",
        live=live,
    )


def _demo_machines(settings: Settings, machines: DemoMachines, *, live: bool) -> DemoMachinesRun:
    """The demo motors' history, then (`live`) their readings against this very server."""
    from fleetcore.db import open_database
    from fleetcore.simulator.cli import local_address
    from fleetcore.simulator.machines_demo import DemoMachinesRun

    return DemoMachinesRun(
        machines,
        open_database=lambda: open_database(settings),
        http_url=f"http://{local_address(settings.host)}:{settings.port}",
        live=live,
    )


def _demo_cameras(settings: Settings, cameras: DemoCameras, *, live: bool) -> DemoCamerasRun:
    """The demo cameras' history, then (`live`) their reads against this very server."""
    from fleetcore.db import open_database
    from fleetcore.simulator.cameras_demo import DemoCamerasRun
    from fleetcore.simulator.cli import local_address

    return DemoCamerasRun(
        cameras,
        open_database=lambda: open_database(settings),
        http_url=f"http://{local_address(settings.host)}:{settings.port}",
        live=live,
    )


@admin_app.command("create-superuser")
def create_superuser(
    email: Annotated[str, typer.Option(help="the superuser's email")],
    password: Annotated[
        str,
        typer.Option(
            help="at least 12 characters (env FLEETCORE_SUPERUSER_PASSWORD)",
            envvar="FLEETCORE_SUPERUSER_PASSWORD",
        ),
    ],
    organization: Annotated[
        str | None, typer.Option(help="slug of an organization the superuser also belongs to")
    ] = None,
) -> None:
    """Create a platform superuser (non-interactive)."""
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    from pydantic import ValidationError

    from fleetcore.auth import users
    from fleetcore.auth.principal import Role
    from fleetcore.auth.schemas import UserIn
    from fleetcore.db import open_database
    from fleetcore.errors import DomainError
    from fleetcore.migrate import upgrade

    async def run() -> tuple[str, str]:
        database = open_database(settings)
        try:
            if settings.migrate_on_start:
                await upgrade(database)
            async with database.session() as session:
                org_id = None
                if organization:
                    org = await users.get_organization_by_slug(session, organization)
                    if org is None:
                        raise typer.BadParameter(f"no organization with slug {organization!r}")
                    org_id = org.id
                data = UserIn(
                    email=email, password=password, role=Role.ADMIN, organization_id=org_id
                )
                user = await users.create_user(session, None, data=data, is_superuser=True)
                return user.email, str(user.id)
        finally:
            await database.close()

    try:
        stored_email, user_id = asyncio.run(run())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"fleetcore: {problems}", err=True)
        raise typer.Exit(2) from None
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"superuser {stored_email} created ({user_id})")


app.command("export")(telemetry_cli.export)
app.command("import")(telemetry_cli.import_)
app.add_typer(telemetry_cli.telemetry_app, name="telemetry")  # fleetcore telemetry compact
app.command("simulate")(simulator_cli.simulate)
app.command("backup")(backup_cli.backup)
app.command("restore")(backup_cli.restore)

app.add_typer(vending_cli.dex_app, name="dex")  # vending (issue 15): fleetcore dex parse
app.add_typer(broker_sync_cli.mqtt_app, name="mqtt")  # fleetcore mqtt sync (dynsec)


def main() -> None:
    """Console-script entry point."""
    app()
