"""A PostgreSQL database of a test's own (migrated, on the throwaway server), devices in it,
and raw SQL reads: for the writer and external-broker tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database, create_engine
from fleetcore.devices.models import Device
from tests.support.postgres import PostgresServer


async def own_database(
    postgres_server: PostgresServer | None, name: str, *, pool_size: int = 2
) -> Database:
    """A new migrated database `<name>_<random>` on the throwaway server (the caller closes
    it); fails the test when there is no throwaway server."""
    if postgres_server is None:
        pytest.fail(f"{name}: this test needs the throwaway PostgreSQL server")
    url = postgres_server.create_database(f"{name}_{uuid.uuid4().hex[:8]}")
    database = Database(create_engine(url, pool_size=pool_size))
    await migrate.upgrade(database)
    return database


async def make_devices(database: Database, count: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A new organization with `count` devices: (organization id, device ids)."""
    async with database.session() as session:
        org = await users.create_organization(
            session, None, data=OrganizationIn(name="w", slug=f"w-{uuid.uuid4().hex[:8]}")
        )
        devices = [
            Device(organization_id=org.id, name=f"d{i}", serial_number=uuid.uuid4().hex)
            for i in range(count)
        ]
        session.add_all(devices)
        await session.commit()
        return org.id, [d.id for d in devices]


async def rows(database: Database, sql: str) -> list[tuple[Any, ...]]:
    """The rows of a read-only SQL query."""
    async with database.engine.connect() as connection:
        return [tuple(r) for r in (await connection.exec_driver_sql(sql)).all()]
