"""Rebuilding a day's roll-ups of some numeric series from the readings stored.

The writer keeps roll-ups current by adding each new reading to its buckets. A restore
brings back readings whose buckets may still hold them (raw readings expire before their
roll-ups), so for the restored day the buckets are recomputed from the readings, read
through telemetry.export like everything else here, and replaced in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert

from fleetcore.db import Database
from fleetcore.telemetry.export import iter_rows
from fleetcore.telemetry.models import ROLLUPS
from fleetcore.telemetry.queries import SeriesRef


def _add(
    buckets: dict[int, dict[str, Any]], series_id: int, bucket: int, ts: int, v: float
) -> None:
    row = buckets.get(bucket)
    if row is None:
        buckets[bucket] = {
            "series_id": series_id,
            "bucket": bucket,
            "cnt": 1,
            "total": v,
            "vmin": v,
            "vmax": v,
            "first_ts": ts,
            "vfirst": v,
            "last_ts": ts,
            "vlast": v,
        }
        return
    row["cnt"] += 1
    row["total"] += v
    row["vmin"] = min(row["vmin"], v)
    row["vmax"] = max(row["vmax"], v)
    row["last_ts"], row["vlast"] = ts, v  # readings come in ts order


async def rebuild_rollups(
    database: Database, series: Sequence[SeriesRef], start: int, end: int
) -> None:
    """Replace the 1-minute and 1-hour buckets in [start, end) of `series` (numbers; the
    range aligned to hours) with ones computed from the stored readings."""
    for ref in series:
        by_width: dict[int, dict[int, dict[str, Any]]] = {width: {} for width in ROLLUPS}
        async for chunk in iter_rows(database, [ref], start, end):
            for row in chunk:
                value = float(row.value)
                for width, buckets in by_width.items():
                    _add(buckets, ref.id, row.ts - row.ts % width, row.ts, value)
        async with database.session(write=True) as session:
            for width, table in ROLLUPS.items():
                await session.execute(
                    delete(table).where(
                        table.c.series_id == ref.id,
                        table.c.bucket >= start,
                        table.c.bucket < end,
                    )
                )
                if by_width[width]:
                    await session.execute(insert(table), list(by_width[width].values()))
            await session.commit()
