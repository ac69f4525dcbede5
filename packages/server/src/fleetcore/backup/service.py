"""Take a backup of the configured database, and restore one into an empty database.

`take_backup` writes a directory (see manifest.py) that appears only once complete.
`restore_backup` refuses before touching the target when the backup is of the other
database, from a newer schema, damaged (sizes and checksums), or when the target is not
empty (without `force`); an older schema is migrated up after the restore.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import URL

from fleetcore import __version__, migrate
from fleetcore.backup import postgres, sqlite
from fleetcore.backup.manifest import (
    MANIFEST,
    BackupError,
    Manifest,
    SchemaAge,
    Snapshot,
    checksum,
    schema_age,
)
from fleetcore.db import Database

Progress = postgres.Progress


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What a restore did: the restored rows per table against the manifest's."""

    manifest: Manifest
    counts: dict[str, int]
    migrated_to: list[str] | None  # the head revisions, when an older schema was migrated

    @property
    def mismatches(self) -> dict[str, tuple[int | None, int | None]]:
        """Tables whose restored rows differ from the manifest: name -> (expected, found)."""
        names = set(self.manifest.tables) | set(self.counts)
        return {
            name: (self.manifest.tables.get(name), self.counts.get(name))
            for name in sorted(names)
            if self.manifest.tables.get(name) != self.counts.get(name)
        }


def _dialect(url: URL) -> str:
    return "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BackupError(f"{out} already exists; a backup never overwrites (name a new one)")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} does not exist")


def _stage(out: Path) -> tuple[Path, Path]:
    """The absolute OUT, checked, and the hidden directory beside it the backup is made in."""
    out = out.absolute()
    _check_out(out)
    return out, Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))


def _publish(manifest: Manifest, staging: Path, out: Path) -> None:
    """Write the manifest last, then give the finished directory its name."""
    manifest.write(staging)
    _fsync(staging / MANIFEST)
    _check_out(out)
    if out.exists():
        out.rmdir()  # an empty directory made for it
    staging.rename(out)
    _fsync(out.parent)


async def _take_sqlite(url: URL, directory: Path, progress: Progress) -> Snapshot:
    source = sqlite.database_path(url.database)
    target = directory / sqlite.DATA_FILE
    progress(f"copying {source.name} (online backup API)")
    created_at = datetime.now(UTC).isoformat()  # the copy's read transaction starts now
    await asyncio.to_thread(sqlite.snapshot, source, target)
    progress("counting rows in the copy")
    # Counted in the copy: the same snapshot by construction.
    tables = await asyncio.to_thread(sqlite.count_rows, target)
    revisions = await asyncio.to_thread(sqlite.revisions, target)
    return Snapshot(
        data_file=sqlite.DATA_FILE,
        schema_revisions=revisions,
        tables=tables,
        created_at=created_at,
        server_version=sqlite.library_version(),
    )


async def take_backup(
    url: URL, out: Path, *, progress: Progress = _quiet, pg_bindir: Path | None = None
) -> Manifest:
    """Back up the database at `url` into the new directory `out`; its manifest."""
    out, staging = await asyncio.to_thread(_stage, out)
    try:
        if _dialect(url) == "sqlite":
            snap = await _take_sqlite(url, staging, progress)
        else:
            snap = await postgres.take(url, staging, progress=progress, bindir=pg_bindir)
        if not snap.schema_revisions:
            raise BackupError(
                "the database has no fleetcore schema (never migrated): nothing to back up"
            )
        progress("checksums")
        data = staging / snap.data_file
        await asyncio.to_thread(_fsync, data)
        manifest = Manifest(
            fleetcore_version=__version__,
            dialect="sqlite" if _dialect(url) == "sqlite" else "postgresql",
            schema_revisions=snap.schema_revisions,
            created_at=snap.created_at,
            tables=snap.tables,
            files={snap.data_file: await asyncio.to_thread(checksum, data)},
            server_version=snap.server_version,
            tool_version=snap.tool_version,
            extensions=snap.extensions,
        )
        await asyncio.to_thread(_publish, manifest, staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _not_empty(target: str, found: list[str]) -> BackupError:
    shown = ", ".join(found[:5]) + (f", ... {len(found)} in all" if len(found) > 5 else "")
    return BackupError(
        f"the target database {target} is not empty (it holds {shown}); restore into an "
        "empty database, or pass --force to replace its contents"
    )


async def _restore_sqlite(
    manifest: Manifest, source: Path, url: URL, *, force: bool, age: SchemaAge, progress: Progress
) -> dict[str, int]:
    target = sqlite.database_path(url.database).absolute()
    found = await asyncio.to_thread(sqlite.occupied_tables, target)
    if found and not force:
        raise _not_empty(str(target), found)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fleetcore-restore-", dir=target.parent) as tmp:
        staging = Path(tmp) / sqlite.DATA_FILE
        progress("checking the backup's database")
        await asyncio.to_thread(shutil.copyfile, source / sqlite.DATA_FILE, staging)
        await asyncio.to_thread(sqlite.check_integrity, staging)
        revisions = await asyncio.to_thread(sqlite.revisions, staging)
        if revisions != sorted(manifest.schema_revisions):
            raise BackupError(
                f"backup is damaged: its database is at {revisions}, the manifest says "
                f"{manifest.schema_revisions}; nothing was restored"
            )
        counts = await asyncio.to_thread(sqlite.count_rows, staging)
        if counts != manifest.tables:
            raise BackupError(
                "backup is damaged: its row counts differ from the manifest's; nothing was restored"
            )
        if age == "older":
            progress("migrating the restored schema up")
            database = Database.from_url(url.set(database=str(staging)), pool_size=1)
            try:
                await migrate.upgrade(database)
            finally:
                await database.close()
        progress(f"writing {target.name}")
        await asyncio.to_thread(sqlite.replace_content, staging, target)
    return counts


async def restore_backup(
    source: Path,
    url: URL,
    *,
    force: bool = False,
    progress: Progress = _quiet,
    pg_bindir: Path | None = None,
) -> RestoreReport:
    """Restore the backup in `source` into the database at `url` (see the module)."""
    manifest = Manifest.read(source)
    dialect = _dialect(url)
    if manifest.dialect != dialect:
        raise BackupError(
            f"this is a {manifest.dialect} backup and the target is {dialect}: restoring "
            "across databases is not supported (restore into a database of the same kind)"
        )
    age = schema_age(manifest)  # a newer schema is refused, --force or not
    progress("verifying checksums")
    await asyncio.to_thread(manifest.verify_files, source)
    if dialect == "sqlite":
        counts = await _restore_sqlite(
            manifest, source, url, force=force, age=age, progress=progress
        )
    else:
        target = await postgres.target(url)
        if target.relations and not force:
            raise _not_empty(str(url.database), target.relations)
        counts = await postgres.restore(
            manifest,
            source,
            url,
            replace=target if target.relations else None,
            progress=progress,
            bindir=pg_bindir,
        )
        database = Database.from_url(url, pool_size=1)
        try:
            restored = sorted(await migrate.current_revisions(database))
            if restored != sorted(manifest.schema_revisions):
                raise BackupError(
                    f"restored, but the data is at schema revision {restored}, not the "
                    f"manifest's {manifest.schema_revisions}: the manifest was changed; "
                    "run `fleetcore db upgrade` if the data is what you expect"
                )
            if age == "older":
                progress("migrating the restored schema up")
                await migrate.upgrade(database)
        finally:
            await database.close()
    migrated = sorted(migrate.head_revisions()) if age == "older" else None
    return RestoreReport(manifest=manifest, counts=counts, migrated_to=migrated)
