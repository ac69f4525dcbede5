"""Migrations run the same on SQLite and PostgreSQL, and match the models."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from fleetcore import migrate
from fleetcore.db import Database, UTCDateTime, utcnow
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


async def test_existing_profiles_get_the_mqtt_limit_defaults(empty_database: Database) -> None:
    """0006 adds NOT NULL columns to device_profiles; rows made before it get the defaults."""
    await migrate.upgrade(empty_database, "0005")
    organizations = sa.table(
        "organizations",
        sa.column("id", sa.Uuid()),
        sa.column("name", sa.String()),
        sa.column("slug", sa.String()),
        sa.column("created_at", UTCDateTime()),
    )
    profiles = sa.table(
        "device_profiles",
        *(sa.column(name, sa.Uuid()) for name in ("id", "organization_id")),
        *(sa.column(name, sa.String()) for name in ("name", "description", "out_of_range")),
        *(sa.column(name, sa.JSON()) for name in ("telemetry_keys", "command_limits")),
        sa.column("offline_timeout_s", sa.Integer()),
        sa.column("allow_reprovision", sa.Boolean()),
        *(sa.column(name, UTCDateTime()) for name in ("created_at", "updated_at")),
    )
    org_id, profile_id = uuid.uuid4(), uuid.uuid4()
    async with empty_database.engine.begin() as connection:
        await connection.execute(
            organizations.insert().values(id=org_id, name="old", slug="old", created_at=utcnow())
        )
        await connection.execute(
            profiles.insert().values(
                id=profile_id,
                organization_id=org_id,
                name="made before 0006",
                description="",
                out_of_range="reject",
                telemetry_keys=[],
                command_limits={},
                offline_timeout_s=600,
                allow_reprovision=False,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    await migrate.upgrade(empty_database)
    async with empty_database.engine.connect() as connection:
        row = (
            await connection.execute(
                sa.text(
                    "SELECT mqtt_rate_per_s, mqtt_burst, max_payload_bytes FROM device_profiles"
                )
            )
        ).one()
    assert tuple(row) == (50.0, 200, 65536)


def test_single_head() -> None:
    assert len(migrate.head_revisions()) == 1
