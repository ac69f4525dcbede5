"""`fleetcore archive`: write closed days to Parquet, list them, restore one.

Like `fleetcore export`, the commands use the database and store `fleetcore serve` would,
with the database's rights (no user): organizations and devices are named by id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from fleetcore.telemetry.cli import cli_settings, open_database, progress_bar

if TYPE_CHECKING:
    from fleetcore.config import Settings
    from fleetcore.db import Database
    from fleetcore.media.store import MediaStore

app = typer.Typer(
    help="Archives: closed days of telemetry as Parquet (docs/archives.md).",
    no_args_is_help=True,
)
T = TypeVar("T")
OrgOption = Annotated[uuid.UUID, typer.Option("--org", help="the organization's id")]
DayOption = Annotated[str, typer.Option("--day", help="the UTC day, YYYY-MM-DD")]


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("a day as YYYY-MM-DD", param_hint="--day") from None


def _run(work: Callable[[Settings, Database, MediaStore], Awaitable[T]], *, migrate: bool) -> T:
    """Run `work` with the settings, database and archive store; a domain error exits 1."""
    settings = cli_settings()
    import fleetcore.models  # noqa: F401 (every table, for foreign keys)
    from fleetcore.archive.store import build_archive_store
    from fleetcore.errors import DomainError

    async def run() -> T:
        database = await open_database(settings, migrate=migrate)
        try:
            return await work(settings, database, build_archive_store(settings))
        finally:
            await database.close()

    try:
        return asyncio.run(run())
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(1) from None


@app.command("run")
def run_archive(
    org: Annotated[
        uuid.UUID | None, typer.Option("--org", help="only this organization (default: all)")
    ] = None,
    day: Annotated[
        str | None, typer.Option("--day", help="archive (again) this UTC day, with --org")
    ] = None,
) -> None:
    """Archive closed days not archived yet (or one day again, with --org and --day)."""
    if day is not None and org is None:
        raise typer.BadParameter("--day needs --org", param_hint="--day")
    chosen = _day(day) if day is not None else None

    async def work(settings: Settings, database: Database, store: MediaStore) -> tuple[int, int]:
        from sqlalchemy import select

        from fleetcore.archive import service
        from fleetcore.archive.writer import archive_day
        from fleetcore.auth.models import Organization
        from fleetcore.telemetry.query_schemas import now_ms

        if org is not None and chosen is not None:
            plan = [(org, chosen)]
        else:
            async with database.session() as session:
                query = select(Organization.id)
                if org is not None:
                    query = query.where(Organization.id == org)
                orgs = list((await session.scalars(query)).all())
            until = service.last_closed_day(now_ms(), settings.archive_after_days)
            plan = [
                (org_id, due)
                for org_id in orgs
                for due in await service.due_days(database, org_id, until=until, limit=10_000)
            ]
        rows = 0
        with progress_bar() as progress:
            task = progress.add_task("archiving", total=max(1, len(plan)))
            for org_id, due in plan:
                progress.update(task, description=f"org={org_id} day={due}")
                result = await archive_day(
                    database,
                    store,
                    org_id=org_id,
                    day=due,
                    rows_per_file=settings.archive_rows_per_file,
                )
                rows += result.rows
                progress.advance(task)
        return len(plan), rows

    days, rows = _run(work, migrate=True)
    typer.echo(f"{days} days archived, {rows} readings")


@app.command("list")
def list_archives(org: OrgOption) -> None:
    """The organization's archived days, newest first."""

    async def work(settings: Settings, database: Database, store: MediaStore) -> list[str]:
        from sqlalchemy import select

        from fleetcore.archive.models import TelemetryArchive

        async with database.session() as session:
            records = (
                await session.scalars(
                    select(TelemetryArchive)
                    .where(TelemetryArchive.organization_id == org)
                    .order_by(TelemetryArchive.day.desc())
                )
            ).all()
        return [
            f"{r.day}  {r.rows:>12} readings  {r.bytes:>12} bytes  "
            f"{'stale' if r.stale_at else 'purged' if r.purged_at else 'archived':8}  "
            f"{r.store}:{r.location}"
            for r in records
        ]

    for line in _run(work, migrate=False):
        typer.echo(line)


@app.command("restore")
def restore(
    org: OrgOption,
    day: DayOption,
    device: Annotated[
        uuid.UUID | None, typer.Option("--device", help="only this device's readings")
    ] = None,
) -> None:
    """Bring an archived day back through the telemetry writer (de-duplicated)."""
    chosen = _day(day)

    async def work(settings: Settings, database: Database, store: MediaStore) -> str:
        from fleetcore.archive.restore import restore_day
        from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter

        writer = TelemetryWriter(database.engine)

        async def submit(items: list[DeviceReadings]) -> tuple[int, int]:
            result = await writer.write(items)
            return len(result.stored), result.duplicates

        with progress_bar() as progress:
            task = progress.add_task("restoring", total=None)
            report = await restore_day(
                database,
                store,
                org_id=org,
                day=chosen,
                device_id=device,
                submit=submit,
                progress=lambda done: progress.update(task, description=f"{done} readings"),
            )
        return (
            f"{report.rows} readings read: {report.stored} stored, "
            f"{report.duplicates} already there"
        )

    typer.echo(_run(work, migrate=True))
