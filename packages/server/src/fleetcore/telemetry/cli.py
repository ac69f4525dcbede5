"""`fleetcore export` and `fleetcore import`: a device's readings to and from files.

They read the database directly, with the settings `fleetcore serve` uses; there is no user,
so the device is named by id. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy.ext.asyncio import AsyncSession

    from fleetcore.config import Settings
    from fleetcore.db import Database
    from fleetcore.devices.models import Device
    from fleetcore.telemetry.queries import Row
    from fleetcore.telemetry.query_schemas import ImportReport

DeviceOption = Annotated[uuid.UUID, typer.Option("--device", help="the device's id")]


def cli_settings() -> Settings:
    from fleetcore.config import ConfigError, load_settings
    from fleetcore.logging import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


async def open_database(settings: Settings, *, migrate: bool) -> Database:
    from fleetcore.db import Database

    database = Database.from_url(settings.resolved_database_url, pool_size=2)
    if migrate and settings.migrate_on_start:  # as `serve` would before writing
        from fleetcore.migrate import upgrade

        await upgrade(database)
    return database


async def device_by_id(session: AsyncSession, device_id: uuid.UUID) -> Device:
    """A live device by id alone (the CLI acts with the database's rights, not a user's)."""
    from sqlalchemy import select

    from fleetcore.devices.models import Device
    from fleetcore.errors import NotFound

    device = await session.scalar(
        select(Device).where(Device.id == device_id, Device.deleted_at.is_(None))
    )
    if device is None:
        raise NotFound(f"no device with id {device_id}", code="DEVICE_NOT_FOUND")
    return device


def progress_bar() -> Progress:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    return Progress(*columns, console=Console(stderr=True))


def export(
    device: DeviceOption,
    out: Annotated[Path, typer.Option("--out", help="the file to write", dir_okay=False)],
    keys: Annotated[str | None, typer.Option(help="comma-separated keys (default: all)")] = None,
    start: Annotated[
        str | None, typer.Option(help="ISO 8601 or epoch ms (default: 24 h before end)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="ISO 8601 or epoch ms (default: now)")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv or parquet (default: by the file's suffix)"),
    ] = None,
) -> None:
    """Export a device's readings in [start, end) to a CSV or Parquet file."""
    settings = cli_settings()
    chosen = fmt or ("parquet" if out.suffix.lower() == ".parquet" else "csv")
    if chosen not in ("csv", "parquet"):
        raise typer.BadParameter("csv or parquet", param_hint="--format")
    from fleetcore.errors import DomainError
    from fleetcore.telemetry import export as exporting
    from fleetcore.telemetry.query_schemas import parse_keys, time_range

    async def run() -> int:
        if chosen == "parquet":
            exporting.require_parquet()
        start_ms, end_ms = time_range(start, end)
        database = await open_database(settings, migrate=False)
        partial = out.with_name(out.name + ".part")
        try:
            async with database.session() as session:
                found = await device_by_id(session, device)
                plan = await exporting.export_of(
                    session,
                    found,
                    keys=parse_keys(keys),
                    start_ms=start_ms,
                    end_ms=end_ms,
                    fmt="parquet" if chosen == "parquet" else "csv",
                )
            rows = 0
            with progress_bar() as progress, partial.open("wb") as handle:
                task = progress.add_task("0 readings", total=max(1, end_ms - start_ms))

                def on_chunk(chunk: list[Row]) -> None:
                    nonlocal rows
                    rows += len(chunk)
                    progress.update(
                        task, completed=chunk[-1].ts - start_ms + 1, description=f"{rows} readings"
                    )

                async for piece in plan.body(database, on_chunk=on_chunk):
                    handle.write(piece)
                progress.update(task, completed=max(1, end_ms - start_ms))
            partial.replace(out)
            return rows
        finally:
            partial.unlink(missing_ok=True)
            await database.close()

    try:
        rows = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{rows} readings written to {out}")


def import_(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="CSV with ts,key,value[,kind]"
        ),
    ],
    device: DeviceOption,
) -> None:
    """Import readings from a CSV file into a device, de-duplicated like live data."""
    settings = cli_settings()
    import fleetcore.models  # noqa: F401 (every table, for the audit event's foreign keys)
    from fleetcore.audit import service as audit
    from fleetcore.devices.models import DeviceProfile
    from fleetcore.errors import DomainError
    from fleetcore.telemetry.importing import import_file
    from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter

    async def run() -> ImportReport:
        database = await open_database(settings, migrate=True)
        try:
            writer = TelemetryWriter(database.engine)

            async def submit(item: DeviceReadings) -> tuple[int, int]:
                result = await writer.write([item])
                return len(result.stored), result.duplicates

            async with database.session() as session:
                found = await device_by_id(session, device)
                profile_id = found.profile_id
                profile = await session.get(DeviceProfile, profile_id) if profile_id else None
            with progress_bar() as progress, file.open("rb") as handle:
                task = progress.add_task("importing", total=max(1, file.stat().st_size))
                report = await import_file(
                    handle,
                    device_id=found.id,
                    organization_id=found.organization_id,
                    profile=profile,
                    submit=submit,
                    progress=lambda done: progress.update(task, completed=done),
                )
                progress.update(task, completed=max(1, file.stat().st_size))
            async with database.session() as session:
                audit.record(
                    session,
                    action="telemetry.import",
                    actor=None,
                    actor_type="cli",
                    organization_id=found.organization_id,
                    target_type="device",
                    target_id=found.id,
                    details={"file": file.name, "rows": report.rows, "stored": report.stored},
                )
                await session.commit()
            return report
        finally:
            await database.close()

    try:
        report = asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(1) from None
    for rejected in report.answer().rejected[:20]:
        typer.echo(f"line {rejected.line}: {rejected.message}", err=True)
    typer.echo(
        f"{report.rows} rows: {report.stored} stored, {report.duplicates} duplicates, "
        f"{report.rejected_count} rejected"
    )


telemetry_app = typer.Typer(help="Telemetry storage.", no_args_is_help=True)


@telemetry_app.command("compact")
def compact(
    after_days: Annotated[
        int | None,
        typer.Option(
            "--after-days",
            min=1,
            help="pack days older than this (default: FLEETCORE_TELEMETRY_COMPACT_AFTER_DAYS)",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="only count what would be packed")
    ] = False,
) -> None:
    """Pack closed days of numeric readings into one row per series and hour (PostgreSQL)."""
    settings = cli_settings()
    days = after_days or settings.telemetry_compact_after_days
    if not days:
        typer.echo("fleetcore: compaction is off (FLEETCORE_TELEMETRY_COMPACT_AFTER_DAYS=0)")
        raise typer.Exit(1)
    from fleetcore.telemetry.compaction import CompactionReport, run_compaction
    from fleetcore.telemetry.query_schemas import ms_to_iso

    async def run() -> CompactionReport:
        database = await open_database(settings, migrate=True)
        try:
            return await run_compaction(database.engine, after_days=days, dry_run=dry_run)
        finally:
            await database.close()

    report = asyncio.run(run())
    if report.skipped:
        typer.echo(f"nothing packed: {report.skipped}")
        return
    verb = "would pack" if dry_run else "packed"
    typer.echo(
        f"{verb} {report.readings} readings of {report.series} series into {report.blocks} "
        f"hourly blocks, before {ms_to_iso(report.cutoff_ms)}"
    )
    if report.tables:
        typer.echo(f"from: {', '.join(report.tables)}")
    if not dry_run:
        dropped = ", ".join(report.partitions_dropped) or "none"
        typer.echo(f"partitions dropped: {dropped}")
        typer.echo(f"{report.rate:,.0f} readings/s over {report.seconds:.1f} s")
