"""A backup's manifest.json: what it holds, from which schema, and the checksums that prove
its data files whole.

A backup is a directory: `manifest.json` plus one data file (`fleetcore.sqlite3`, a SQLite
database, or `fleetcore.pgdump`, a pg_dump custom-format archive). The manifest is written
last, and the directory appears under its name only once complete (it is built beside it
under a temporary name and renamed), so a directory with a manifest is a whole backup unless
something changed it later, which the checksums catch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from fleetcore.migrate import alembic_config, head_revisions

MANIFEST = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FileSum:
    """A data file's size and SHA-256."""

    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What one database's backup step produced, before checksums: all of one snapshot."""

    data_file: str
    schema_revisions: list[str]
    tables: dict[str, int]
    created_at: str
    server_version: str
    tool_version: str | None = None
    extensions: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a backup holds: all of it describes the one snapshot the data file holds."""

    fleetcore_version: str
    dialect: Literal["sqlite", "postgresql"]
    schema_revisions: list[str]
    created_at: str  # ISO 8601, UTC: when the snapshot was taken
    tables: dict[str, int]  # row counts per table, in the snapshot
    files: dict[str, FileSum]
    server_version: str  # SQLite library or PostgreSQL server version
    tool_version: str | None = None  # pg_dump's, for PostgreSQL
    extensions: list[str] = field(default_factory=list)  # PostgreSQL extensions in the dump
    format: int = FORMAT

    @property
    def total_rows(self) -> int:
        """Rows in every table together."""
        return sum(self.tables.values())

    def write(self, directory: Path) -> None:
        """Write manifest.json into `directory`."""
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        (directory / MANIFEST).write_text(text, encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """The manifest of the backup in `directory`, or BackupError naming what is wrong."""
        path = directory / MANIFEST
        if not directory.is_dir():
            raise BackupError(f"{directory} is not a backup directory")
        if not path.is_file():
            raise BackupError(
                f"{directory} is not a fleetcore backup (no {MANIFEST}; an interrupted backup "
                "never gets one)"
            )
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise TypeError("not an object")
            if raw.get("format") != FORMAT:
                raise BackupError(
                    f"{path}: backup format {raw.get('format')!r} is not {FORMAT}; restore it "
                    f"with the fleetcore that wrote it ({raw.get('fleetcore_version', '?')})"
                )
            files = {
                _plain_name(str(name)): FileSum(bytes=int(v["bytes"]), sha256=str(v["sha256"]))
                for name, v in raw["files"].items()
            }
            manifest = cls(
                fleetcore_version=str(raw["fleetcore_version"]),
                dialect=_dialect(raw["dialect"]),
                schema_revisions=[str(r) for r in raw["schema_revisions"]],
                created_at=str(raw["created_at"]),
                tables={str(k): int(v) for k, v in raw["tables"].items()},
                files=files,
                server_version=str(raw["server_version"]),
                tool_version=None if raw.get("tool_version") is None else str(raw["tool_version"]),
                extensions=[str(e) for e in raw.get("extensions", [])],
            )
        except BackupError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BackupError(f"{path} is damaged: {type(exc).__name__}: {exc}") from None
        if not manifest.files:
            raise BackupError(f"{path} is damaged: it lists no data file")
        return manifest

    def verify_files(self, directory: Path) -> None:
        """Raise BackupError unless every data file is there with its size and checksum."""
        for name, expected in self.files.items():
            path = directory / name
            if not path.is_file():
                raise BackupError(f"backup is incomplete: {name} is missing from {directory}")
            size = path.stat().st_size
            if size != expected.bytes:
                raise BackupError(
                    f"backup is damaged: {name} has {size} bytes, the manifest says "
                    f"{expected.bytes} (truncated or changed); nothing was restored"
                )
            if checksum(path).sha256 != expected.sha256:
                raise BackupError(
                    f"backup is damaged: {name} does not match its SHA-256 in the manifest; "
                    "nothing was restored"
                )


def _plain_name(name: str) -> str:
    # A data file sits in the backup directory itself; never a path out of it.
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"bad data file name {name!r}")
    return name


def _dialect(value: object) -> Literal["sqlite", "postgresql"]:
    if value == "sqlite":
        return "sqlite"
    if value == "postgresql":
        return "postgresql"
    raise ValueError(f"unknown dialect {value!r}")


def checksum(path: Path) -> FileSum:
    """The size and SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileSum(bytes=size, sha256=digest.hexdigest())


SchemaAge = Literal["current", "older"]


def schema_age(manifest: Manifest) -> SchemaAge:
    """How the backup's schema compares with this code's head: the same, or older (restored
    and then migrated up). A revision this code does not know comes from a newer fleetcore:
    BackupError, whatever --force says, since this code cannot read or migrate it."""
    revisions = frozenset(manifest.schema_revisions)
    if revisions == head_revisions():
        return "current"
    script = ScriptDirectory.from_config(alembic_config())
    for revision in sorted(revisions):
        try:
            known = script.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            from fleetcore import __version__

            raise BackupError(
                f"the backup's schema revision {revision} is newer than this fleetcore's "
                f"({', '.join(sorted(head_revisions()))}, fleetcore {__version__}): restore "
                f"with fleetcore {manifest.fleetcore_version} or later"
            )
    return "older"
