"""Alembic migrations applied programmatically, the same on SQLite and PostgreSQL."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from fleetcore.advisory_locks import LockKey
from fleetcore.db import Database
from fleetcore.telemetry.models import is_partition

# Serialises concurrent `serve` processes that start against one PostgreSQL database.
_PG_MIGRATION_LOCK = LockKey.MIGRATIONS
VERSION_TABLE = "alembic_version"


def alembic_config() -> Config:
    """An Alembic Config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(files("fleetcore") / "migrations"))
    return config


def include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Alembic's comparison skips the time-series partitions, which partitions.py manages."""
    return not (type_ == "table" and name is not None and is_partition(name))


@cache
def head_revisions() -> frozenset[str]:
    """The revisions a current database is at."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def _upgrade(connection: Connection, target: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, target)


def _current(connection: Connection) -> frozenset[str]:
    # Read the version table directly: MigrationContext logs on every call, and /ready asks often.
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    query = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 (a constant)
    return frozenset(connection.execute(query).scalars())


async def upgrade(database: Database, target: str = "head") -> None:
    """Bring the schema to `target` in one transaction."""
    async with database.connect() as connection:
        if database.bind is not None:  # a test connection: stay inside its transaction
            await connection.run_sync(_upgrade, target)
            return
        async with connection.begin():
            await connection.run_sync(_upgrade, target)


async def current_revisions(database: Database) -> frozenset[str]:
    """The revisions the database is at (empty if never migrated)."""
    async with database.connect() as connection:
        return await connection.run_sync(_current)


async def is_current(database: Database) -> bool:
    """True when the database schema is at the head revision."""
    return await current_revisions(database) == head_revisions()
