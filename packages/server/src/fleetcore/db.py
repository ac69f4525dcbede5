"""Database layer: one async engine (SQLite or PostgreSQL), sessions, the declarative base."""

from __future__ import annotations

import asyncio
import errno
import uuid
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, DateTime, Engine, Integer, MetaData, event, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import URL, Dialect, ExceptionContext
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool, QueuePool
from sqlalchemy.types import TypeDecorator

from fleetcore.errors import Conflict

if TYPE_CHECKING:
    from fleetcore.config import Settings

# Constraint names are stable across databases, so migrations can drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


SQLITE_BEGIN_OPTION = "fleetcore_sqlite_begin"  # "IMMEDIATE" for a write transaction
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
    "PRAGMA synchronous=NORMAL",
)

# A SQL function on every SQLite connection: zlib-compressed UTF-8 text back to text, so
# packed telemetry (zlib'd JSON) unnests with json_each in SQL (telemetry/packed.py).
SQLITE_INFLATE = "fc_inflate"


def sqlite_inflate(blob: bytes | None) -> str | None:
    """zlib-compressed UTF-8 text, inflated (NULL stays NULL)."""
    return None if blob is None else zlib.decompress(blob).decode()


def create_engine(url: URL | str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine tuned for the backend: SQLite pragmas, or a PostgreSQL pool."""
    if str(url).startswith("sqlite"):
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=0)
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={
            "server_settings": {"application_name": "fleetcore"},
            "async_creator_fn": _connect_asyncpg,  # the asyncpg dialect's connect hook
        },
    )
    event.listen(engine.sync_engine, "handle_error", _unavailable_as_operational_error)
    return engine


async def _connect_asyncpg(*args: Any, **kwargs: Any) -> Any:
    """asyncpg.connect, a refused or timed-out connection raised as a connection exception
    (SQLSTATE 08001) instead of a bare OSError, which SQLAlchemy would not wrap: callers
    then see a database error like any other (the app answers 503, not 500)."""
    import asyncpg  # type: ignore[import-untyped]  # no stubs; imported only for PostgreSQL

    try:
        return await asyncpg.connect(*args, **kwargs)
    except OSError as exc:  # refused, unreachable, timed out (TimeoutError is an OSError)
        raise asyncpg.exceptions.ClientCannotConnectError(
            f"cannot connect to the database: {exc}"
        ) from exc


def storage_full(exc: BaseException) -> bool:
    """Whether a database error means its disk is full: SQLite's SQLITE_FULL ("database or
    disk is full"), PostgreSQL's disk_full (SQLSTATE 53100), or ENOSPC from the OS."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "sqlstate", None) == "53100":
            return True
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(current) or "No space left on device" in str(current):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


# SQLSTATE classes that mean the database cannot serve now, whatever the statement:
# connection exception, insufficient resources (disk full, too many connections),
# operator intervention (shutting down, starting up, crashed).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})


def _unavailable_as_operational_error(context: ExceptionContext) -> BaseException | None:
    """Raise every "database unavailable" error as OperationalError, as SQLite's locks and
    psycopg's refused connections already are: asyncpg's become a generic DBAPIError or an
    InterfaceError, which the app would answer with 500 instead of 503 + Retry-After."""
    if isinstance(context.sqlalchemy_exception, OperationalError):
        return None
    original = context.original_exception
    cause = original.__cause__ or original  # the driver's own error behind the adapter's
    sqlstate = getattr(cause, "sqlstate", None) or getattr(original, "sqlstate", None)
    if not (
        context.is_disconnect
        or isinstance(cause, OSError)
        or (isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES)
    ):
        return None
    return OperationalError(
        context.statement,
        context.parameters,
        original,
        hide_parameters=True,  # a telemetry batch's parameters would flood the log
        connection_invalidated=context.is_disconnect,
    )


def create_sync_sqlite_engine(url: URL, *, keep_one: bool = False) -> Engine:
    """A synchronous engine on the same SQLite file, for work done in a thread in one go
    (the telemetry writer), with the same pragmas and transaction handling. No connection
    pool, or with `keep_one` one connection kept open between uses (its user runs one piece
    of work at a time, each in whichever worker thread is free: so no same-thread check)."""
    sync_url = url.set(drivername="sqlite+pysqlite")
    engine = (
        sa_create_engine(
            sync_url,
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=0,
            connect_args={"check_same_thread": False},
        )
        if keep_one
        else sa_create_engine(sync_url, poolclass=NullPool)
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine | Engine) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so
        # SAVEPOINT and transactional DDL behave as on PostgreSQL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA page_count")
        if cursor.fetchone()[0] == 0:
            # A new file: incremental, so compaction can hand freed pages back
            # (telemetry/sqlite_packing.py). It only takes before the first table, and
            # asked of an existing file it would write its header on every connect.
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()
        # aiosqlite's adapter forwards to sqlite3's create_function on its own thread.
        dbapi_connection.create_function(SQLITE_INFLATE, 1, sqlite_inflate, deterministic=True)

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers ask for IMMEDIATE so they queue for the lock instead of failing to upgrade.
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


class Database:
    """The engine plus a session factory; tests bind it to one rolled-back connection."""

    def __init__(self, engine: AsyncEngine, *, bind: AsyncConnection | None = None) -> None:
        self.engine = engine
        self.bind = bind
        if bind is not None:  # sessions commit savepoints inside the caller's transaction
            self.sessionmaker = async_sessionmaker(
                bind=bind, expire_on_commit=False, join_transaction_mode="create_savepoint"
            )
        else:
            self.sessionmaker = async_sessionmaker(bind=engine, expire_on_commit=False)
        # SQLite: a transaction that reads and then writes fails at once (no busy wait) if
        # another writer committed meanwhile; sessions meant to write take the lock at BEGIN.
        self.writer_sessionmaker = self.sessionmaker
        self._write_turns: asyncio.Lock | None = None
        if bind is None and engine.dialect.name == "sqlite":
            immediate = engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            self.writer_sessionmaker = async_sessionmaker(bind=immediate, expire_on_commit=False)
            self._write_turns = asyncio.Lock()

    @classmethod
    def from_url(cls, url: URL | str, *, pool_size: int = 10) -> Database:
        """A Database with its own engine."""
        return cls(create_engine(url, pool_size=pool_size))

    @property
    def background_writes_allowed(self) -> bool:
        """False when bound to one connection (a test's transaction, rolled back after it).

        Every session there is a savepoint on that one connection, so a background writer's
        session (a job, a component's writer task) would interleave its savepoints with a
        request's and break it. There the job scheduler runs no job (fleetcore.jobs) and
        components start no background writer; tests that need them use a live database.
        """
        return self.bind is None

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, write: bool = False) -> AsyncIterator[AsyncSession]:
        """A session; the caller commits explicitly, anything uncommitted is rolled back.

        `write=True` for a session that will write (on SQLite it takes the write lock when
        its transaction begins, queueing behind other writers instead of failing).
        """
        maker = self.writer_sessionmaker if write else self.sessionmaker
        async with maker() as session:
            yield session

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """Hold for a write transaction on a busy path (requests that each write a little):
        on SQLite, this process's writers then take the write lock one at a time, in arrival
        order. Without it they wait in SQLite's busy handler, which polls with growing sleeps
        (up to 100 ms each): under load some waited seconds while others came and went. Only
        around the write itself, never nested. A no-op on PostgreSQL (row locks decide) and
        on a test's shared connection."""
        if self._write_turns is None:
            yield
            return
        async with self._write_turns:
            yield

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A connection (the test connection when bound)."""
        if self.bind is not None:
            yield self.bind
            return
        async with self.engine.connect() as connection:
            yield connection

    async def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        async with self.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection (not the test connection's engine)."""
        if self.bind is None:
            await self.engine.dispose()


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use fleetcore.db.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


async def flush_or_conflict(session: AsyncSession, conflict: Conflict) -> None:
    """Flush; a unique constraint broken since the service checked (a concurrent request
    took the name, serial, ...) rolls back and raises `conflict`."""
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise conflict from None


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one (an ISO 8601 time without offset) is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> uuid.UUID:
    """A random primary key."""
    return uuid.uuid4()


# A 64-bit identity on PostgreSQL, SQLite's rowid alias on SQLite.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


def open_database(settings: Settings) -> Database:
    """The configured database (SQLite's directory created if missing).

    Here, not in fleetcore.app, so a command that only needs the database (`fleetcore admin
    create-superuser`) does not import every router (about 2 s of CPU per process).
    """
    url = settings.resolved_database_url
    if settings.is_sqlite and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    return Database.from_url(url, pool_size=settings.db_pool_size)
