"""Vending machines: the vending side of a device, created on first use."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.vending.models import Cabinet, Machine

DEFAULT_CABINET = "main"


async def ensure_machine(
    session: AsyncSession, *, organization_id: uuid.UUID, device_id: uuid.UUID
) -> Machine:
    """The device's vending machine, created with one cabinet ("main") if it has none.

    The caller has already checked the device belongs to `organization_id`; flushes, does
    not commit.
    """
    machine = await session.get(Machine, device_id)
    if machine is not None:
        return machine
    machine = Machine(device_id=device_id, organization_id=organization_id)
    session.add(machine)
    await session.flush()
    session.add(Cabinet(organization_id=organization_id, device_id=device_id, name=DEFAULT_CABINET))
    await session.flush()
    return machine


async def cabinets_of(session: AsyncSession, device_id: uuid.UUID) -> list[Cabinet]:
    """A machine's cabinets in display order."""
    rows = await session.scalars(
        select(Cabinet)
        .where(Cabinet.device_id == device_id)
        .order_by(Cabinet.position, Cabinet.name)
    )
    return list(rows)
