"""A PostgreSQL database of devices for the telemetry writer tests, and raw SQL reads."""

from __future__ import annotations

import uuid
from typing import Any

from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.devices.models import Device


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
