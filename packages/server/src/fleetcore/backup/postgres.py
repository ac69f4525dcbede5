"""PostgreSQL backups with pg_dump and pg_restore (custom format).

The snapshot: one REPEATABLE READ, read-only transaction exports its snapshot
(pg_export_snapshot), locks every table ACCESS SHARE (so none is dropped before pg_dump has
it; writers are not blocked), reads the schema revision and counts every table's rows, while
pg_dump dumps the very same snapshot (`--snapshot`). The transaction stays open until
pg_dump is done, so the manifest's counts describe exactly the rows in the archive, however
much ingest writes meanwhile.

The restore runs pg_restore in one transaction (`--single-transaction`, stopping at the
first error): a failed restore leaves the target as it was. With --force it drops the
backup's objects first (`--clean --if-exists`), in that same transaction.

The password never reaches a command line, the manifest or a log: pg_dump and pg_restore
read it from a temporary pgpass file (mode 0600) named by PGPASSFILE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from fleetcore.backup.manifest import BackupError, Manifest, Snapshot
from fleetcore.db import create_engine

DATA_FILE = "fleetcore.pgdump"
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
LOCK_TIMEOUT = "60s"  # waiting longer for a table (a partition being made) fails the backup
_SSL_MODES = frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"})
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")

Progress = Callable[[str], None]

# Fleetcore's tables: the current schema's, partitions counted through their parent, and
# not an extension's (TimescaleDB's catalog).
_TABLES = text(
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
    "AND NOT c.relispartition AND NOT EXISTS (SELECT 1 FROM pg_depend d "
    "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') "
    "ORDER BY c.relname"
)
# Anything a restore would collide with: any relation outside the system schemas that is
# not an extension's.
_OCCUPIED = text(
    "SELECT n.nspname || '.' || c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%' AND NOT EXISTS (SELECT 1 FROM pg_depend d "
    "WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') "
    "ORDER BY 1"
)


@dataclass(frozen=True, slots=True)
class Tool:
    """A pg_dump or pg_restore binary and its version."""

    path: str
    version: str
    major: int


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def conninfo(url: URL) -> str:
    """A libpq connection string for the URL, without its password."""
    query = {k: (v if isinstance(v, str) else v[0]) for k, v in url.query.items()}
    parts = {
        "host": query.get("host") or url.host,
        "port": str(url.port) if url.port else query.get("port"),
        "user": url.username,
        "dbname": url.database,
        "application_name": "fleetcore-backup",
    }
    ssl = query.get("sslmode") or query.get("ssl")
    if ssl in ("true", "1", "on"):
        ssl = "require"
    if ssl in _SSL_MODES:
        parts["sslmode"] = ssl
    return " ".join(f"{k}={_quote_conninfo(v)}" for k, v in parts.items() if v)


@contextlib.contextmanager
def tool_env(url: URL) -> Iterator[dict[str, str]]:
    """The environment for pg_dump/pg_restore: the password in a private pgpass file."""
    env = dict(os.environ)
    if url.password is None:
        yield env
        return
    password = str(url.password).replace("\\", "\\\\").replace(":", "\\:")
    directory = tempfile.mkdtemp(prefix="fleetcore-pgpass-")  # mode 0700
    path = Path(directory) / "pgpass"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:*:{password}\n")
        env["PGPASSFILE"] = str(path)
        env.pop("PGPASSWORD", None)
        yield env
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _probe(path: str) -> Tool | None:
    try:
        result = subprocess.run(  # noqa: S603 (a PostgreSQL binary, no shell)
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    found = _VERSION.search(result.stdout)
    if result.returncode != 0 or found is None:
        return None
    version = found.group(1) + (f".{found.group(2)}" if found.group(2) else "")
    return Tool(path=path, version=version, major=int(found.group(1)))


def find_tool(name: str, *, at_least: int, bindir: Path | None = None) -> Tool:
    """The newest `name` (pg_dump, pg_restore) in `bindir`, or on PATH and beside Debian's
    server binaries; BackupError when none is there or the newest is older than `at_least`."""
    if bindir is not None:
        candidates = [str(bindir / name)]
    else:
        on_path = shutil.which(name)
        candidates = [*([on_path] if on_path else []), *_debian_candidates(name)]
    tools = [tool for tool in map(_probe, candidates) if tool is not None]
    where = str(bindir) if bindir is not None else f"PATH or {DEBIAN_BINDIRS}"
    if not tools:
        raise BackupError(
            f"{name} not found in {where}: install the PostgreSQL client "
            f"(Debian: postgresql-client-{at_least}) or name its directory with --pg-bindir"
        )
    best = max(tools, key=lambda tool: tool.major)
    if best.major < at_least:
        raise BackupError(
            f"{name} {best.version} ({best.path}) is older than PostgreSQL {at_least}, which "
            f"this needs: install postgresql-client-{at_least} or later, or name its directory "
            "with --pg-bindir"
        )
    return best


def _debian_candidates(name: str) -> list[str]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    return [str(path) for path in sorted(root.glob(f"*/bin/{name}")) if path.is_file()]


async def _server_version(connection: AsyncConnection) -> tuple[int, str]:
    number = int(await connection.scalar(text("SHOW server_version_num")) or 0)
    version = str(await connection.scalar(text("SHOW server_version")))
    return number // 10_000, version.split()[0]


async def _count(connection: AsyncConnection, tables: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in tables:
        quoted = '"' + name.replace('"', '""') + '"'
        counts[name] = int(await connection.scalar(text(f"SELECT count(*) FROM {quoted}")) or 0)  # noqa: S608
    return counts


async def _revisions(connection: AsyncConnection, tables: list[str]) -> list[str]:
    if "alembic_version" not in tables:
        return []
    rows = await connection.scalars(text("SELECT version_num FROM alembic_version"))
    return sorted(str(revision) for revision in rows)


def _mib(path: Path) -> float:
    try:
        return path.stat().st_size / 1_048_576
    except FileNotFoundError:
        return 0.0


async def _run_tool(
    args: list[str], env: dict[str, str], *, watch: Path | None, progress: Progress, label: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    errors = asyncio.ensure_future(process.stderr.read())
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=0.25)
                break
            except TimeoutError:
                if watch is not None:
                    progress(f"{label}: {_mib(watch):.1f} MiB written")
        stderr = (await errors).decode("utf-8", "replace").strip()
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        errors.cancel()
        raise
    if process.returncode != 0:
        tail = "\n".join(stderr.splitlines()[-10:])
        raise BackupError(f"{label} failed (exit {process.returncode}): {tail}")


async def take(
    url: URL, directory: Path, *, progress: Progress, bindir: Path | None = None
) -> Snapshot:
    """Dump the database into `directory`, its counts from the dump's own snapshot."""
    engine = create_engine(url, pool_size=1)
    target = directory / DATA_FILE
    try:
        async with engine.connect() as plain:
            connection = await plain.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            async with connection.begin():
                major, server_version = await _server_version(connection)
                tool = await asyncio.to_thread(find_tool, "pg_dump", at_least=major, bindir=bindir)
                snapshot_id = str(await connection.scalar(text("SELECT pg_export_snapshot()")))
                created_at = datetime.now(UTC).isoformat()
                tables = list(await connection.scalars(_TABLES))
                if tables:
                    await connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                    names = ", ".join('"' + t.replace('"', '""') + '"' for t in tables)
                    await connection.execute(text(f"LOCK TABLE {names} IN ACCESS SHARE MODE"))
                revisions = await _revisions(connection, tables)
                extensions = sorted(
                    str(e)
                    for e in await connection.scalars(text("SELECT extname FROM pg_extension"))
                )
                args = [
                    tool.path,
                    "--dbname",
                    conninfo(url),
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    f"--file={target}",
                    "--no-password",
                    f"--lock-wait-timeout={LOCK_TIMEOUT}",
                ]
                with tool_env(url) as env:
                    dump = asyncio.ensure_future(
                        _run_tool(args, env, watch=target, progress=progress, label="pg_dump")
                    )
                    try:
                        counts = await _count(connection, tables)
                        await dump
                    finally:
                        if not dump.done():
                            dump.cancel()
                            await asyncio.gather(dump, return_exceptions=True)
    finally:
        await engine.dispose()
    return Snapshot(
        data_file=DATA_FILE,
        schema_revisions=revisions,
        tables=counts,
        created_at=created_at,
        server_version=server_version,
        tool_version=tool.version,
        extensions=extensions,
    )


@dataclass(frozen=True, slots=True)
class Target:
    """The database a restore writes: its schema and the relations already in it."""

    schema: str
    relations: list[str]  # "schema.name"

    @property
    def foreign(self) -> list[str]:
        """Relations outside the schema fleetcore uses (a forced restore will not drop them)."""
        return [name for name in self.relations if not name.startswith(self.schema + ".")]


async def target(url: URL) -> Target:
    """The target database's schema and the relations already in it."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            schema = str(await connection.scalar(text("SELECT current_schema()")))
            relations = [str(name) for name in await connection.scalars(_OCCUPIED)]
            return Target(schema=schema, relations=relations)
    finally:
        await engine.dispose()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _relay(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, progress: Progress
) -> None:
    relayed = 0
    while chunk := await source.read(1 << 16):
        sink.write(chunk)
        await sink.drain()
        relayed += len(chunk)
        progress(f"restoring: {relayed / 1_048_576:.1f} MiB of SQL applied")


async def _apply(
    restore_tool: Tool, psql: Tool, archive: Path, url: URL, *, prologue: str, progress: Progress
) -> None:
    """pg_restore's SQL, between our BEGIN and COMMIT, into psql stopping at the first error.

    COMMIT is written only once pg_restore has exited cleanly and psql has taken every
    statement: if anything fails before, psql ends without it and the server rolls back."""
    render = await asyncio.create_subprocess_exec(
        restore_tool.path,
        "--file=-",
        "--no-owner",
        "--no-privileges",
        str(archive),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    with tool_env(url) as env:
        apply = await asyncio.create_subprocess_exec(
            psql.path,
            "--dbname",
            conninfo(url),
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--set=ON_ERROR_STOP=1",
            "--file=-",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert render.stdout is not None
        assert render.stderr is not None
        assert apply.stdin is not None
        assert apply.stderr is not None
        render_errors = asyncio.ensure_future(render.stderr.read())
        apply_errors = asyncio.ensure_future(apply.stderr.read())
        try:
            apply.stdin.write(prologue.encode())
            try:
                await _relay(render.stdout, apply.stdin, progress)
            except ConnectionError:  # psql stopped at an error; its stderr says which
                # pg_restore may have written its last byte and exited already.
                with contextlib.suppress(ProcessLookupError):
                    render.kill()
                await apply.wait()
                raise BackupError(
                    "the restore failed and was rolled back: " + _tail(await apply_errors)
                ) from None
            if await render.wait() != 0:
                raise BackupError(
                    "pg_restore could not read the archive: "
                    + _tail(await render_errors)
                    + "; nothing was restored"
                )
            if apply.returncode is None and not apply.stdin.is_closing():
                apply.stdin.write(b"COMMIT;\n")
                with contextlib.suppress(ConnectionError):
                    await apply.stdin.drain()
                apply.stdin.close()
            if await apply.wait() != 0:
                raise BackupError(
                    "the restore failed and was rolled back: " + _tail(await apply_errors)
                )
        finally:
            for process in (render, apply):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            for task in (render_errors, apply_errors):
                task.cancel()


def _tail(stderr: bytes) -> str:
    return "\n".join(stderr.decode("utf-8", "replace").strip().splitlines()[-10:])


async def restore(
    manifest: Manifest,
    directory: Path,
    url: URL,
    *,
    replace: Target | None,
    progress: Progress,
    bindir: Path | None = None,
) -> dict[str, int]:
    """Restore the backup into `url` in one transaction (after dropping `replace`'s schema,
    in that same transaction); the restored rows per table."""
    archive_major = int((manifest.tool_version or "0").split(".")[0])
    restore_tool = await asyncio.to_thread(
        find_tool, "pg_restore", at_least=archive_major, bindir=bindir
    )
    # psql beside that pg_restore: the script may hold meta-commands of its own minor version.
    beside = Path(restore_tool.path).parent
    psql = await asyncio.to_thread(find_tool, "psql", at_least=archive_major, bindir=beside)
    prologue = "BEGIN;\n"
    if replace is not None:
        if replace.foreign:
            raise BackupError(
                f"the target also holds relations outside schema {replace.schema} "
                f"({', '.join(replace.foreign[:5])}); --force replaces only that schema: "
                "drop them, or restore into a new database"
            )
        schema = _quote_ident(replace.schema)
        prologue += f"DROP SCHEMA {schema} CASCADE;\nCREATE SCHEMA {schema};\n"
    engine = create_engine(url, pool_size=1)
    try:
        timescale = "timescaledb" in manifest.extensions
        if timescale:  # Timescale's documented restore procedure around pg_restore
            async with engine.begin() as connection:
                await connection.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
                await connection.execute(text("SELECT timescaledb_pre_restore()"))
        try:
            progress("restoring (one transaction)")
            await _apply(
                restore_tool, psql, directory / DATA_FILE, url, prologue=prologue, progress=progress
            )
        finally:
            if timescale:
                async with engine.begin() as connection:
                    await connection.execute(text("SELECT timescaledb_post_restore()"))
        progress("counting restored rows")
        async with engine.connect() as connection:
            tables = list(await connection.scalars(_TABLES))
            return await _count(connection, tables)
    finally:
        await engine.dispose()
