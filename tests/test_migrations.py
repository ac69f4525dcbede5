"""Migrations run the same on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from fleetcore import migrate
from fleetcore.db import Database
from fleetcore.models import metadata
from tests.support.postgres import PostgresServer


@pytest.fixture
async def empty_database(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Database]:
    """A brand-new, never-migrated database of the current backend."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    else:
        server: PostgresServer | None = request.getfixturevalue("postgres_server")
        if server is None:
            pytest.fail("an external FLEETCORE_TEST_DATABASE_URL cannot host a fresh database")
        url = server.create_database(f"fresh_{uuid.uuid4().hex[:12]}")
    database = Database.from_url(url, pool_size=2)
    try:
        yield database
    finally:
        await database.close()


async def test_upgrade_downgrade_upgrade(empty_database: Database) -> None:
    assert await migrate.current_revisions(empty_database) == frozenset()
    assert not await migrate.is_current(empty_database)
    await migrate.upgrade(empty_database)
    assert await migrate.is_current(empty_database)
    await migrate.upgrade(empty_database)  # idempotent
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(_downgrade_to_base)
    assert await migrate.current_revisions(empty_database) == frozenset()
    await migrate.upgrade(empty_database)
    assert await migrate.current_revisions(empty_database) == migrate.head_revisions()


def _downgrade_to_base(connection: Connection) -> None:
    from alembic import command

    config = migrate.alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


def _diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": migrate.include_name}
    )
    return list(compare_metadata(context, metadata))


async def test_models_match_migrations(db: Database) -> None:
    """A table or column added to a model without a migration fails here."""
    async with db.connect() as connection:
        diff = await connection.run_sync(_diff)
    assert diff == []


def test_single_head() -> None:
    assert len(migrate.head_revisions()) == 1
