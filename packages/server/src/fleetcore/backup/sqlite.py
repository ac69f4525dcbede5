"""SQLite backups through the online backup API (sqlite3.Connection.backup).

The copy is made in one step, one read transaction on the source: a consistent snapshot. In
WAL mode (the server's) a reader never blocks writers, so ingest goes on meanwhile. A copy
made in several steps would restart whenever another connection writes, which under steady
ingest could be never-ending.

A restore never writes the target until the backup has proved whole: the data file is copied
to a staging file, checked (integrity, schema revision, row counts against the manifest),
migrated up when older, and only then copied into the target, again by the backup API,
which replaces the target's content in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from fleetcore.backup.manifest import BackupError

DATA_FILE = "fleetcore.sqlite3"
BUSY_TIMEOUT_MS = 10_000


@contextmanager
def _open(path: Path, *, create: bool = False) -> Iterator[sqlite3.Connection]:
    # mode=rw never creates a database at a mistyped path; isolation_level=None: autocommit.
    mode = "rwc" if create else "rw"
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode={mode}", uri=True, isolation_level=None
    )
    with closing(connection):
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        yield connection


def database_path(url_database: str | None) -> Path:
    """The file of a SQLite URL's database part."""
    if not url_database or url_database == ":memory:":
        raise BackupError("a SQLite backup needs a database file, not an in-memory database")
    return Path(url_database)


def snapshot(source: Path, target: Path) -> None:
    """Copy the live database `source` into the new file `target`, consistently."""
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    with _open(source) as src, _open(target, create=True) as dst:
        src.backup(dst)  # pages=-1: one step, one read transaction
        # A self-contained file: the copy says WAL in its header like its source.
        dst.execute("PRAGMA journal_mode=DELETE")


def tables(connection: sqlite3.Connection) -> list[str]:
    """The tables of a database (not SQLite's own)."""
    rows = connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\' ORDER BY name"
    )
    return [str(name) for (name,) in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def count_rows(path: Path) -> dict[str, int]:
    """Rows per table of the database file `path`."""
    with _open(path) as connection:
        counts: dict[str, int] = {}
        for name in tables(connection):
            (count,) = connection.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()  # noqa: S608
            counts[name] = int(count)
        return counts


def revisions(path: Path) -> list[str]:
    """The Alembic revisions recorded in the database file (empty when never migrated)."""
    with _open(path) as connection:
        if "alembic_version" not in tables(connection):
            return []
        rows = connection.execute("SELECT version_num FROM alembic_version")
        return sorted(str(revision) for (revision,) in rows)


def library_version() -> str:
    """The SQLite library's version."""
    return sqlite3.sqlite_version


def check_integrity(path: Path) -> None:
    """Raise BackupError unless SQLite finds the file sound (quick_check)."""
    try:
        with _open(path) as connection:
            problems = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"backup is damaged: {exc}") from None
    if problems != ["ok"]:
        raise BackupError(f"backup is damaged: {'; '.join(problems[:5])}")


def occupied_tables(path: Path) -> list[str]:
    """The target's tables (none when there is no file)."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    try:
        with _open(path) as connection:
            return tables(connection)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"the target {path} is not a SQLite database ({exc})") from None


def replace_content(staging: Path, target: Path) -> None:
    """Copy `staging` into `target` (created if missing) in one transaction of the target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open(staging) as src, _open(target, create=True) as dst:
        src.backup(dst)
