"""Vending machines: the vending side of a device, created on first use."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Base, new_id, utcnow
from fleetcore.vending.models import Cabinet, Machine

DEFAULT_CABINET = "main"


async def ensure_machine(
    session: AsyncSession, *, organization_id: uuid.UUID, device_id: uuid.UUID
) -> Machine:
    """The device's vending machine, created with one cabinet ("main") if it has none.

    The caller has already checked the device belongs to `organization_id`; does not
    commit. Two first uploads of one device at once both succeed: the inserts do nothing
    on conflict (the primary key, and the cabinet's (device_id, name)), so the database
    decides which one creates the rows.
    """
    machine = await session.get(Machine, device_id)
    if machine is not None:
        return machine
    await insert_or_ignore(
        session,
        Machine,
        {"device_id": device_id, "organization_id": organization_id, "created_at": utcnow()},
    )
    await insert_or_ignore(
        session,
        Cabinet,
        {
            "id": new_id(),
            "organization_id": organization_id,
            "device_id": device_id,
            "name": DEFAULT_CABINET,
            "position": 0,
            "created_at": utcnow(),
        },
    )
    machine = await session.get(Machine, device_id)
    assert machine is not None
    return machine


async def insert_or_ignore(
    session: AsyncSession, model: type[Base], values: dict[str, Any]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True when a row went in."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0))


async def cabinets_of(session: AsyncSession, device_id: uuid.UUID) -> list[Cabinet]:
    """A machine's cabinets in display order."""
    rows = await session.scalars(
        select(Cabinet)
        .where(Cabinet.device_id == device_id)
        .order_by(Cabinet.position, Cabinet.name)
    )
    return list(rows)
