"""`fleetcore backup` and `fleetcore restore` on both databases: a backup taken while
readings stream in restores exactly what its manifest says; damaged, newer or misplaced
restores are refused with the target untouched; the commands end to end as processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text, tuple_
from sqlalchemy.engine import URL, make_url

from fleetcore import migrate
from fleetcore.backup import postgres
from fleetcore.backup.manifest import MANIFEST, BackupError, Manifest
from fleetcore.backup.service import restore_backup, take_backup
from fleetcore.db import Database
from fleetcore.telemetry.models import ROLLUP_1M, ROLLUP_PENDING, VALUE_TABLES
from fleetcore_protocol.telemetry import Kind
from tests.support import forkserver
from tests.support.devices import new_device
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.postgres import PostgresServer
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

PER_REQUEST = 20  # readings per POST
TS_NUM = VALUE_TABLES[Kind.NUMBER]


def _value(i: int) -> float:
    return i * 0.25 + 0.125


class Load:
    """One device posting numbered readings over HTTP, recording which were acknowledged."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.headers = {"X-Device-Token": token}
        self.base = int(time.time() * 1000) - 3_600_000
        self.sent = 0  # readings handed to the server (acknowledged or not)
        self.acked = 0  # readings acknowledged, all of 0..acked-1 (one sender, in order)
        self.running = True

    def ts(self, i: int) -> int:
        return self.base + i

    async def run(self) -> None:
        while self.running:
            first = self.sent
            body = [
                {"ts": self.ts(i), "values": {"temp": _value(i), "label": f"r{i}"}}
                for i in range(first, first + PER_REQUEST)
            ]
            self.sent += PER_REQUEST
            response = await self.http.post(
                "/api/v1/devices/me/telemetry", headers=self.headers, json=body
            )
            assert response.status_code == 200, response.text
            self.acked = first + PER_REQUEST


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> URL:
    """A database nothing was ever written to: a new SQLite path, a new PostgreSQL database."""
    if backend == "sqlite":
        return make_url(f"sqlite+aiosqlite:///{tmp_path / 'restored' / 'fleetcore.db'}")
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    if server is None:
        pytest.fail("needs the throwaway PostgreSQL server")
    return make_url(server.create_database(f"restore_{uuid.uuid4().hex[:10]}"))


@pytest.fixture
async def restored(empty_url: URL) -> AsyncIterator[Database]:
    """A Database on empty_url, for reading what a restore wrote."""
    database = Database.from_url(empty_url, pool_size=2)
    try:
        yield database
    finally:
        await database.close()


def _sqlite_tables(path: Path) -> int:
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path)) as connection:
        return int(connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])


async def _is_empty(url: URL) -> bool:
    if url.get_backend_name() == "sqlite":
        return await asyncio.to_thread(_sqlite_tables, Path(str(url.database))) == 0
    return (await postgres.target(url)).relations == []


def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".partial")]


async def _numbers(database: Database) -> dict[int, float]:
    """ts -> value of every stored number (one device in these tests)."""
    async with database.connect() as connection:
        rows = await connection.execute(select(TS_NUM.c.ts, TS_NUM.c.value))
        return {int(ts): float(value) for ts, value in rows}


async def _rollup_consistent(database: Database) -> tuple[int, int]:
    """(numbers stored, numbers in the 1-minute roll-ups or waiting for them): equal in any
    consistent snapshot, since each batch writes both in one transaction."""
    async with database.connect() as connection:
        stored = int(await connection.scalar(select(func.count()).select_from(TS_NUM)) or 0)
        rolled = int(
            await connection.scalar(select(func.coalesce(func.sum(ROLLUP_1M.c.cnt), 0))) or 0
        )
        if database.dialect == "postgresql":
            pending = await connection.scalar(
                select(func.coalesce(func.sum(func.cardinality(ROLLUP_PENDING.c.series_ids)), 0))
            )
            rolled += int(pending or 0)
        return stored, rolled


async def test_backup_under_load_restores_exactly_the_snapshot(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    restored: Database,
    empty_url: URL,
    tmp_path: Path,
) -> None:
    _, token = await new_device(live_client, live_tenant)
    load = Load(live_client, token)
    sender = asyncio.create_task(load.run())
    try:
        await wait_until(lambda: load.acked >= 3_000, within=120)
        acked_before = load.acked
        manifest = await take_backup(live_database.engine.url, tmp_path / "backup")
        sent_by_end = load.sent
        # Ingest went on through the backup and after it.
        await wait_until(lambda: load.acked >= sent_by_end + 5 * PER_REQUEST, within=30)
    finally:
        load.running = False
        await sender
    assert manifest.dialect == live_database.dialect
    assert manifest.schema_revisions == sorted(migrate.head_revisions())
    snapshot_numbers = manifest.tables["ts_num"]
    assert acked_before <= snapshot_numbers <= sent_by_end
    assert snapshot_numbers % PER_REQUEST == 0  # whole requests: a batch is all or nothing
    assert manifest.tables["ts_text"] == snapshot_numbers

    report = await restore_backup(tmp_path / "backup", empty_url)
    assert report.mismatches == {}
    assert report.counts == manifest.tables
    assert report.migrated_to is None

    # The restored readings are exactly the first ones sent, with their values.
    numbers = await _numbers(restored)
    assert numbers == {load.ts(i): _value(i) for i in range(snapshot_numbers)}
    # ...and 100 random (series, ts) of the restore match the source row for row.
    async with restored.connect() as connection:
        sample = (
            await connection.execute(
                select(TS_NUM.c.series_id, TS_NUM.c.ts, TS_NUM.c.value)
                .order_by(func.random())
                .limit(100)
            )
        ).all()
    assert len(sample) == 100
    async with live_database.connect() as connection:
        source = (
            await connection.execute(
                select(TS_NUM.c.series_id, TS_NUM.c.ts, TS_NUM.c.value).where(
                    tuple_(TS_NUM.c.series_id, TS_NUM.c.ts).in_([(s, t) for s, t, _ in sample])
                )
            )
        ).all()
    assert sorted(map(tuple, source)) == sorted(map(tuple, sample))
    # Roll-ups and raw rows of one snapshot agree (a torn copy would not).
    stored, rolled = await _rollup_consistent(restored)
    assert stored == rolled == snapshot_numbers
    assert (await migrate.current_revisions(restored)) == migrate.head_revisions()


async def test_restore_refuses_a_database_that_is_not_empty(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    restored: Database,
    empty_url: URL,
    tmp_path: Path,
) -> None:
    manifest = await take_backup(live_database.engine.url, tmp_path / "backup")
    assert manifest.tables["organizations"] == 1
    await restore_backup(tmp_path / "backup", empty_url)
    # Into the source itself, and into the restored copy: refused, nothing changed.
    for target in (live_database.engine.url, empty_url):
        with pytest.raises(BackupError, match=r"is not empty .*--force"):
            await restore_backup(tmp_path / "backup", target)
    await new_device(live_client, live_tenant)  # the source moves on: one device more
    later = await take_backup(live_database.engine.url, tmp_path / "later")
    assert later.tables["devices"] == manifest.tables["devices"] + 1
    # --force replaces the restored copy's contents with the later backup, in one go.
    report = await restore_backup(tmp_path / "later", empty_url, force=True)
    assert report.mismatches == {}
    async with restored.connect() as connection:
        devices = await connection.scalar(text("SELECT count(*) FROM devices"))
    assert devices == later.tables["devices"]


async def test_backup_refuses_to_overwrite(live_database: Database, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "something").write_text("keep me")
    with pytest.raises(BackupError, match="already exists"):
        await take_backup(live_database.engine.url, tmp_path / "taken")
    assert (tmp_path / "taken" / "something").read_text() == "keep me"
    (tmp_path / "empty").mkdir()  # an empty directory made for it is fine
    await take_backup(live_database.engine.url, tmp_path / "empty")
    assert (tmp_path / "empty" / MANIFEST).is_file()
    assert _leftovers(tmp_path) == []


def _edit_manifest(directory: Path, **changes: object) -> None:
    path = directory / MANIFEST
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


async def test_newer_schema_is_refused_even_with_force(
    live_database: Database, empty_url: URL, tmp_path: Path
) -> None:
    await take_backup(live_database.engine.url, tmp_path / "backup")
    _edit_manifest(tmp_path / "backup", schema_revisions=["9999"], fleetcore_version="99.1.0")
    for force in (False, True):
        with pytest.raises(BackupError, match=r"newer .*restore with fleetcore 99\.1\.0 or later"):
            await restore_backup(tmp_path / "backup", empty_url, force=force)
    assert await _is_empty(empty_url)


async def test_damaged_backups_are_refused_and_nothing_is_restored(
    live_database: Database, empty_url: URL, tmp_path: Path
) -> None:
    await take_backup(live_database.engine.url, tmp_path / "backup")
    manifest = Manifest.read(tmp_path / "backup")
    (data_name,) = manifest.files

    flipped = tmp_path / "flipped"
    shutil.copytree(tmp_path / "backup", flipped)
    with (flipped / data_name).open("r+b") as handle:
        handle.seek(manifest.files[data_name].bytes // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BackupError, match="SHA-256"):
        await restore_backup(flipped, empty_url)

    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "backup", truncated)
    with (truncated / data_name).open("r+b") as handle:
        handle.truncate(manifest.files[data_name].bytes - 4096)
    with pytest.raises(BackupError, match="truncated"):
        await restore_backup(truncated, empty_url)

    unfinished = tmp_path / "unfinished"
    shutil.copytree(tmp_path / "backup", unfinished)
    (unfinished / MANIFEST).unlink()
    with pytest.raises(BackupError, match="not a fleetcore backup"):
        await restore_backup(unfinished, empty_url)

    garbled = tmp_path / "garbled"
    shutil.copytree(tmp_path / "backup", garbled)
    (garbled / MANIFEST).write_text('{"format": 1, "files": {"../../etc/passwd": {}}}')
    with pytest.raises(BackupError, match="damaged"):
        await restore_backup(garbled, empty_url)

    assert await _is_empty(empty_url)


async def test_other_kind_of_database_is_refused(live_database: Database, tmp_path: Path) -> None:
    await take_backup(live_database.engine.url, tmp_path / "backup")
    other = (
        make_url("postgresql+asyncpg://nobody@127.0.0.1:1/none")
        if live_database.dialect == "sqlite"
        else make_url(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    )
    with pytest.raises(BackupError, match="across databases is not supported"):
        await restore_backup(tmp_path / "backup", other)


async def test_older_schema_is_restored_then_migrated_up(
    backend: str, empty_url: URL, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        old_url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        old_url = make_url(server.create_database(f"old_{uuid.uuid4().hex[:10]}"))
    old = Database.from_url(old_url, pool_size=1)
    try:
        await migrate.upgrade(old, "0017")
        async with old.connect() as connection:
            await connection.execute(
                text(
                    "INSERT INTO organizations (id, name, slug, created_at) "
                    "VALUES (:id, 'Old', 'old', CURRENT_TIMESTAMP)"
                ),
                {"id": uuid.uuid4().hex if backend == "sqlite" else uuid.uuid4()},
            )
            await connection.commit()
    finally:
        await old.close()
    manifest = await take_backup(old_url, tmp_path / "backup")
    assert manifest.schema_revisions == ["0017"]
    report = await restore_backup(tmp_path / "backup", empty_url)
    assert report.mismatches == {}
    assert report.migrated_to == sorted(migrate.head_revisions())
    target = Database.from_url(empty_url, pool_size=1)
    try:
        assert await migrate.current_revisions(target) == migrate.head_revisions()
        async with target.connect() as connection:
            assert await connection.scalar(text("SELECT slug FROM organizations")) == "old"
    finally:
        await target.close()


def test_pg_tools_older_than_the_server_are_refused(
    postgres_server: PostgresServer | None,
) -> None:
    found = postgres.find_tool("pg_dump", at_least=1)
    assert found.major >= 15
    with pytest.raises(BackupError, match=r"older than PostgreSQL 99.*postgresql-client-99"):
        postgres.find_tool("pg_dump", at_least=99)
    with pytest.raises(BackupError, match="not found"):
        postgres.find_tool("pg_dump", at_least=15, bindir=Path("/nonexistent"))


def test_the_password_stays_off_command_lines() -> None:
    url = make_url("postgresql+asyncpg://fc:s3cr%3At@db.example:6543/fleet?ssl=require")
    info = postgres.conninfo(url)
    assert "s3cr" not in info
    assert "host='db.example'" in info
    assert "sslmode='require'" in info
    with postgres.tool_env(url) as env:
        pgpass = Path(env["PGPASSFILE"])
        assert pgpass.read_text() == "*:*:*:*:s3cr\\:t\n"
        assert pgpass.stat().st_mode & 0o077 == 0
        assert "PGPASSWORD" not in env
    assert not pgpass.exists()


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return forkserver.run(
        [FLEETCORE, *args],
        capture_output=True,
        text=True,
        env=fleetcore_env(FLEETCORE_LOG_LEVEL="warning", **env),
        timeout=120,
        check=False,
    )


def test_cli_backup_and_restore(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        source = {"FLEETCORE_DATA_DIR": str(tmp_path / "source")}
        target = {"FLEETCORE_DATA_DIR": str(tmp_path / "target")}
        (tmp_path / "source").mkdir()
    else:
        server: PostgresServer | None = request.getfixturevalue("postgres_server")
        if server is None:
            pytest.fail("needs the throwaway PostgreSQL server")
        # The throwaway server trusts local users, so any password is accepted: what matters
        # is that it is written nowhere.
        secret = uuid.uuid4().hex
        urls = [
            server.create_database(name).replace("fleetcore@", f"fleetcore:{secret}@")
            for name in (f"cli_src_{secret[:8]}", f"cli_dst_{secret[:8]}")
        ]
        source, target = ({"FLEETCORE_DATABASE_URL": url} for url in urls)
    assert _cli("db", "upgrade", **source).returncode == 0
    made = _cli(
        "admin",
        "create-superuser",
        "--email",
        "root@example.com",
        "--password",
        "correct horse battery",
        **source,
    )
    assert made.returncode == 0, made.stderr

    out = tmp_path / "nightly"
    taken = _cli("backup", str(out), **source)
    assert taken.returncode == 0, taken.stderr
    assert f"written to {out}" in taken.stdout
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["dialect"] == backend
    assert manifest["tables"]["users"] == 1
    again = _cli("backup", str(out), **source)
    assert again.returncode == 1
    assert "already exists" in again.stderr

    first = _cli("restore", str(out), **target)
    assert first.returncode == 0, first.stderr
    assert "row counts match the manifest" in first.stdout
    refused = _cli("restore", str(out), **target)
    assert refused.returncode == 1
    assert "not empty" in refused.stderr
    forced = _cli("restore", str(out), "--force", **target)
    assert forced.returncode == 0, forced.stderr
    assert "row counts match the manifest" in forced.stdout

    if backend == "postgresql":
        for result in (taken, first, refused, forced):
            assert secret not in result.stdout + result.stderr
        assert secret not in (out / MANIFEST).read_text()


async def test_a_failed_postgresql_restore_leaves_nothing_behind(
    postgres_server: PostgresServer | None, tmp_path: Path
) -> None:
    if postgres_server is None:
        pytest.fail("needs the throwaway PostgreSQL server")
    source = make_url(postgres_server.create_database(f"src_{uuid.uuid4().hex[:10]}"))
    database = Database.from_url(source, pool_size=1)
    try:
        await migrate.upgrade(database)
    finally:
        await database.close()
    await take_backup(source, tmp_path / "backup")
    url = make_url(postgres_server.create_database(f"trap_{uuid.uuid4().hex[:10]}"))
    trap = Database.from_url(url, pool_size=1)
    try:
        # A type named like a table the dump creates late: no relation, so the target counts
        # as empty, and the restore fails half-way through, at CREATE TABLE organizations.
        async with trap.connect() as connection:
            await connection.execute(text("CREATE TYPE organizations AS (x integer)"))
            await connection.commit()
        with pytest.raises(BackupError, match=r"rolled back.*organizations"):
            await restore_backup(tmp_path / "backup", url)
        assert await _is_empty(url)
    finally:
        await trap.close()


async def test_nothing_to_back_up(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no SQLite database at"):
        await take_backup(make_url(f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"), tmp_path / "a")
    blank = tmp_path / "blank.db"
    with closing(sqlite3.connect(blank)) as connection:
        connection.execute("CREATE TABLE unrelated (x integer)")
    with pytest.raises(BackupError, match="no fleetcore schema"):
        await take_backup(make_url(f"sqlite+aiosqlite:///{blank}"), tmp_path / "b")
    assert _leftovers(tmp_path) == []
