"""INSERT ... ON CONFLICT DO NOTHING on both databases: where concurrent first writes of one
row (a machine, its first cabinet, a slot's stock row) let the database decide."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Base


async def insert_or_ignore(
    session: AsyncSession, model: type[Base], values: dict[str, Any]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on either database; True when a row went in."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    result = await session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(getattr(result, "rowcount", 0))
