"""INSERT ... ON CONFLICT DO NOTHING on both databases: where concurrent first writes of one
row (a machine, its first cabinet, a slot's stock row) let the database decide."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Base

_CHUNK = 1_000


async def insert_or_ignore(
    session: AsyncSession, model: type[Base], values: dict[str, Any] | list[dict[str, Any]]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING of one row or several in one statement, on either
    database; True when a row went in."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    rows = [values] if isinstance(values, dict) else values
    inserted = 0
    for start in range(0, len(rows), _CHUNK):  # within both drivers' bound-parameter limits
        chunk = rows[start : start + _CHUNK]
        result = await session.execute(insert(model).values(chunk).on_conflict_do_nothing())
        inserted += max(getattr(result, "rowcount", 0), 0)
    return inserted > 0
