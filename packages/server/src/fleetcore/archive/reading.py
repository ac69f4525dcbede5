"""An organization's readings of one UTC day, device by device, through telemetry.export.

Archives never read the value tables themselves: export.iter_rows is the one way to read a
device's readings in constant memory, and whatever storage lies under it (raw rows, packed
rows of compacted days) is then archived, counted and restored alike.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import date

from sqlalchemy import select

from fleetcore.db import Database
from fleetcore.telemetry.export import iter_rows
from fleetcore.telemetry.models import Series
from fleetcore.telemetry.models import TelemetryKey as Key
from fleetcore.telemetry.partitions import DAY_MS, day_start_ms
from fleetcore.telemetry.queries import Row, SeriesRef
from fleetcore_protocol.telemetry import Kind


def day_bounds(day: date) -> tuple[int, int]:
    """[start, end) of the UTC day in epoch ms."""
    start = day_start_ms(day)
    return start, start + DAY_MS


async def org_series(
    database: Database, org_id: uuid.UUID, device_id: uuid.UUID | None = None
) -> dict[uuid.UUID, list[SeriesRef]]:
    """Every series of the organization (deleted devices' too), by device, ordered."""
    query = (
        select(Series.device_id, Series.id, Key.name, Key.kind)
        .join(Key, Key.id == Series.key_id)
        .where(Series.organization_id == org_id)
        .order_by(Series.device_id, Key.name, Key.kind)
    )
    if device_id is not None:
        query = query.where(Series.device_id == device_id)
    async with database.connect() as connection:
        rows = (await connection.execute(query)).all()
    by_device: dict[uuid.UUID, list[SeriesRef]] = defaultdict(list)
    for device, sid, name, kind in rows:
        by_device[device].append(SeriesRef(sid, name, Kind(kind)))
    return dict(by_device)


async def day_rows(
    database: Database, org_id: uuid.UUID, day: date
) -> AsyncIterator[tuple[uuid.UUID, list[Row]]]:
    """(device, chunk of readings in (ts, key, kind) order), device after device."""
    start, end = day_bounds(day)
    for device_id, series in (await org_series(database, org_id)).items():
        async for chunk in iter_rows(database, series, start, end):
            yield device_id, chunk


async def count_day(database: Database, org_id: uuid.UUID, day: date) -> int:
    """How many readings the organization holds for the day."""
    total = 0
    async for _, chunk in day_rows(database, org_id, day):
        total += len(chunk)
    return total
