"""`fleetcore backup OUT` and `fleetcore restore IN`, on the database `fleetcore serve` uses.

Exit 0 done; 1 refused or failed (the reason on stderr, the target untouched); 2 a bad
setting. Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from fleetcore.config import Settings

T = TypeVar("T")

PgBindirOption = Annotated[
    Path | None,
    typer.Option(
        "--pg-bindir",
        file_okay=False,
        help="PostgreSQL: the directory of pg_dump/pg_restore (default: the newest on PATH "
        "or in /usr/lib/postgresql/*/bin)",
    ),
]


def _settings() -> Settings:
    from fleetcore.config import ConfigError, load_settings
    from fleetcore.logging import configure_logging

    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _describe(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


@contextmanager
def _status() -> Iterator[Callable[[str], None]]:
    """A spinner with the current step on a terminal; nothing when logged to a file."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda _: None
        return
    with console.status("starting") as status:
        yield lambda step: status.update(step)


def _run(work: Callable[[Callable[[str], None]], Coroutine[Any, Any, T]]) -> T:
    from sqlalchemy.exc import DBAPIError

    from fleetcore.backup.manifest import BackupError

    try:
        with _status() as progress:
            return asyncio.run(work(progress))
    except BackupError as exc:
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(1) from None
    except DBAPIError as exc:
        typer.echo(f"fleetcore: the database cannot be used: {exc.orig}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:  # the backup directory cannot be written or read
        typer.echo(f"fleetcore: {exc}", err=True)
        raise typer.Exit(1) from None


def backup(
    out: Annotated[
        Path, typer.Argument(help="the backup directory to create (must not exist, or be empty)")
    ],
    pg_bindir: PgBindirOption = None,
) -> None:
    """Back up the database into the directory OUT: data, manifest.json and checksums.

    Safe while the platform runs: SQLite through its online backup API, PostgreSQL through
    pg_dump of one snapshot; the manifest's row counts describe that same snapshot."""
    settings = _settings()
    from fleetcore.backup.service import take_backup

    url = settings.resolved_database_url
    manifest = _run(lambda progress: take_backup(url, out, progress=progress, pg_bindir=pg_bindir))
    size = sum(f.bytes for f in manifest.files.values())
    typer.echo(
        f"backup of {manifest.dialect} {_describe(url)} written to {out}: schema "
        f"{', '.join(manifest.schema_revisions)}, {len(manifest.tables)} tables, "
        f"{manifest.total_rows:,} rows, {size / 1_048_576:.1f} MiB"
    )


def restore(
    source: Annotated[
        Path, typer.Argument(help="a backup directory written by `fleetcore backup`")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="replace the contents of a database that is not empty (never a "
            "newer schema's backup)",
        ),
    ] = False,
    pg_bindir: PgBindirOption = None,
) -> None:
    """Restore a backup into the (empty) database; an older schema is then migrated up.

    Refused, with the target untouched, when the backup is damaged, from a newer fleetcore,
    of the other kind of database, or the target is not empty (unless --force). Stop the
    platform's processes first."""
    settings = _settings()
    from fleetcore.backup.service import restore_backup

    url = settings.resolved_database_url
    report = _run(
        lambda progress: restore_backup(
            source, url, force=force, progress=progress, pg_bindir=pg_bindir
        )
    )
    manifest = report.manifest
    typer.echo(
        f"restored {source} (taken {manifest.created_at}, fleetcore "
        f"{manifest.fleetcore_version}, schema {', '.join(manifest.schema_revisions)}) into "
        f"{_describe(url)}: {len(report.counts)} tables, {sum(report.counts.values()):,} rows"
    )
    if report.migrated_to is not None:
        typer.echo(f"schema migrated up to {', '.join(report.migrated_to)}")
    mismatches = report.mismatches
    if mismatches:
        for name, (expected, found) in mismatches.items():
            typer.echo(f"  {name}: manifest {expected}, restored {found}", err=True)
        typer.echo(
            f"fleetcore: {len(mismatches)} tables differ from the manifest's row counts", err=True
        )
        raise typer.Exit(1)
    typer.echo("row counts match the manifest")
