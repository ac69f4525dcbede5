"""Shared fixtures: both databases, a rolled-back transaction per test, the app and a client."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fleetcore import migrate
from fleetcore.app import create_app
from fleetcore.config import Settings
from fleetcore.db import Database, create_engine
from fleetcore.server import tune_gc
from tests.support.mqtt_raw import RawClient
from tests.support.postgres import PostgresServer, free_port
from tests.support.tenants import Tenant, make_superuser, make_tenant

# The browser tests' fixtures (browser, site, context), shared by the *_browser modules; each
# route resolved once per session, not once per test's app (tests/support/route_cache.py).
pytest_plugins = ("tests.support.browser", "tests.support.route_cache")
BACKENDS = ("sqlite", "postgresql")
TEST_SECRET = secrets.token_urlsafe(48)
BROKER_SECRET = secrets.token_urlsafe(24)  # the external broker's (fleetcore.broker_auth)


def pytest_configure(config: pytest.Config) -> None:
    """No garbage collection while collecting (a worker imports every test module and
    Schemathesis builds its strategies: a sixth of collection's CPU went to full
    collections of objects that all live on); not in xdist's controller, which collects
    nothing and runs until the end."""
    if not (config.getoption("numprocesses", None) and not hasattr(config, "workerinput")):
        gc.disable()
    # structlog's default console (code under test that never configured logging) lays out
    # an exception with rich: every frame and its locals, highlighted; that was 18 CPU-s of
    # a run's workers. The app's own console (fleetcore.logging) prints plain tracebacks.
    structlog.dev.ConsoleRenderer.get_active().exception_formatter = structlog.dev.plain_traceback


def pytest_collection_finish(session: pytest.Session) -> None:
    """Then collect as a server process does (fleetcore.server.tune_gc): what collection
    built is frozen out of collections, and young collections are rarer. Each test builds an
    app and its objects; full collections walking everything imported cost about 20 ms a
    test."""
    tune_gc()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    """The throwaway server, or None when FLEETCORE_TEST_DATABASE_URL names an external one."""
    if os.environ.get("FLEETCORE_TEST_DATABASE_URL"):
        yield None
        return
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer | None) -> str:
    """URL of the PostgreSQL test database."""
    if postgres_server is None:
        return os.environ["FLEETCORE_TEST_DATABASE_URL"]
    return postgres_server.url("fleetcore_test")


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Which database a storage-facing test runs on; every such test runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    """A migrated database of the current backend, shared by the session."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'fleetcore.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """One engine per backend, schema at head."""
    engine = create_engine(database_url, pool_size=5)
    await migrate.upgrade(Database(engine))
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[Database]:
    """A Database whose every session runs inside one transaction, rolled back after the test."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield Database(engine, bind=connection)
        finally:
            await transaction.rollback()


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for an app under test."""
    values: dict[str, object] = {
        "environment": "test",
        "secret_key": TEST_SECRET,
        "data_dir": tmp_path,
        "auto_migrate": False,
        "log_format": "json",
        "mqtt_port": 0,  # tests that need the broker give it a free port
        # argon2id still, at a cost that keeps the suite fast
        "password_hash_time_cost": 1,
        "password_hash_memory_kib": 1024,
        "broker_auth_secret": BROKER_SECRET,
        # This machine's free disk space is not the test's business (test_housekeeping_disk)
        "ready_disk_warn_percent": 0,
        "ready_disk_min_percent": 0,
    }
    values.update(overrides)
    # Reading the environment and validating every field took ~5 ms a test (pydantic-
    # settings): settings that differ only in their data directory are validated once. The
    # key holds the environment the settings read, so a test that sets FLEETCORE_* gets its own.
    environment = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("FLEETCORE")))
    key = repr((sorted((k, v) for k, v in values.items() if k != "data_dir"), environment))
    base = _validated.get(key)
    if base is None:
        base = _validated[key] = Settings(**values)  # type: ignore[arg-type]
    return base.model_copy(update={"data_dir": Path(str(values["data_dir"]))})


_validated: dict[str, Settings] = {}


@asynccontextmanager
async def running_app(
    database: Database, tmp_path: Path, **overrides: object
) -> AsyncIterator[FastAPI]:
    """The application on `database` with its lifespan (pipeline, jobs) running."""
    application = create_app(make_settings(tmp_path, **overrides), database=database)
    async with application.router.lifespan_context(application):
        yield application


@asynccontextmanager
async def client_for(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to `app` in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def app(db: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The application on the test transaction, its lifespan running."""
    async with running_app(db, tmp_path) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    async with client_for(app) as http:
        yield http


@pytest.fixture
async def tenant(app: FastAPI, client: httpx.AsyncClient, db: Database) -> Tenant:
    """Organization A with a signed-in user of every role."""
    return await make_tenant(client, db, settings=app.state.settings)


@pytest.fixture
async def other_tenant(app: FastAPI, client: httpx.AsyncClient, db: Database) -> Tenant:
    """Organization B, to prove A's objects stay invisible to it."""
    return await make_tenant(client, db, settings=app.state.settings)


@pytest.fixture
async def superuser(app: FastAPI, client: httpx.AsyncClient, db: Database) -> dict[str, str]:
    """Auth headers of a platform superuser."""
    return await make_superuser(client, db, settings=app.state.settings)


@pytest.fixture(scope="session")
def live_pg_url(postgres_server: PostgresServer | None) -> str:
    """A second PostgreSQL database whose commits are real (for the pipeline and writers)."""
    if postgres_server is None:
        pytest.fail("the pipeline tests need the throwaway PostgreSQL server")
    return postgres_server.create_database("fleetcore_live")


_live_engines: dict[str, AsyncEngine] = {}


async def _live_pg_engine(url: str) -> AsyncEngine:
    """One migrated engine per session (created on first use, in the session's loop)."""
    if url not in _live_engines:
        engine = create_engine(url, pool_size=10)
        await migrate.upgrade(Database(engine))
        _live_engines[url] = engine
    return _live_engines[url]


# The identity sequences of each table (PostgreSQL), read once: a table emptied is restarted.
_SEQUENCES = """
SELECT t.relname, s.relname FROM pg_class s
JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relkind = 'S'
"""
_sequences: dict[str, list[str]] = {}


async def _truncate_all(engine: AsyncEngine) -> None:
    """Empty every table, restarting its identity, as TRUNCATE ... RESTART IDENTITY would.

    TRUNCATE of all 62 tables takes 0.6-1 s here (a new file for each table and partition);
    finding the few tables a test wrote to and deleting their rows, children first, takes
    milliseconds.
    """
    from fleetcore.models import metadata

    tables = [t.name for t in reversed(metadata.sorted_tables)]  # children first
    written = " UNION ALL ".join(  # our own table names, not input
        f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM {name})"  # noqa: S608
        for name in tables
    )
    async with engine.begin() as connection:
        if not _sequences:
            for table, sequence in await connection.exec_driver_sql(_SEQUENCES):
                _sequences.setdefault(table, []).append(sequence)
        names = set((await connection.exec_driver_sql(written)).scalars())
        for name in (t for t in tables if t in names):
            await connection.exec_driver_sql(f"DELETE FROM {name}")  # noqa: S608
            for sequence in _sequences.get(name, ()):
                await connection.exec_driver_sql(f"ALTER SEQUENCE {sequence} RESTART")


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test that needs a fresh one: a copy takes a
    few milliseconds, migrating a new file a third of a second or more."""
    path = tmp_path_factory.mktemp("sqlite-template") / "fleetcore.db"
    database = Database.from_url(f"sqlite+aiosqlite:///{path}")
    await migrate.upgrade(database)
    await database.close()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
async def live_database(
    backend: str, tmp_path: Path, sqlite_template: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """A database with real commits: a fresh SQLite file, or PostgreSQL emptied afterwards."""
    if backend == "sqlite":
        shutil.copyfile(sqlite_template, tmp_path / "live.db")
        database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'live.db'}", pool_size=10)
        try:
            yield database
        finally:
            await database.close()
        return
    engine = await _live_pg_engine(str(request.getfixturevalue("live_pg_url")))
    try:
        yield Database(engine)
    finally:
        await _truncate_all(engine)


@pytest.fixture
async def live_app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The application on a live database, its lifespan (pipeline included) running."""
    async with running_app(live_database, tmp_path) as application:
        yield application


@pytest.fixture
async def live_client(live_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the live application."""
    async with client_for(live_app) as http:
        yield http


@pytest.fixture
async def live_tenant(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_database: Database
) -> Tenant:
    """Organization A on the live database."""
    return await make_tenant(live_client, live_database, settings=live_app.state.settings)


@pytest.fixture
async def mqtt_app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The application on a live database with its embedded MQTT broker on a free port."""
    async with running_app(live_database, tmp_path, mqtt_port=free_port()) as application:
        yield application
        await RawClient.close_all()


@pytest.fixture
async def http(mqtt_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for mqtt_app."""
    async with client_for(mqtt_app) as client:
        yield client


@pytest.fixture
async def org(mqtt_app: FastAPI, http: httpx.AsyncClient, live_database: Database) -> Tenant:
    """Organization A, made through mqtt_app."""
    return await make_tenant(http, live_database, settings=mqtt_app.state.settings)


@pytest.fixture(scope="session", autouse=True)
async def _dispose_live_engines() -> AsyncIterator[None]:
    """Close the live PostgreSQL pools at the end of the session."""
    yield
    for engine in _live_engines.values():
        await engine.dispose()
    _live_engines.clear()
