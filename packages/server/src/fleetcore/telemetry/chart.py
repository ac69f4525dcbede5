"""Charts of any range at a few thousand points: the bucket width a chart's range and width
call for, and the read that fills those buckets with min, max and mean.

A chart cannot show more than one value per pixel column, so it asks for its width and gets
at most that many buckets, whatever the range: reading 2.6 million readings to draw 1,200
columns would cost the database, the network and the browser for nothing. Each bucket keeps
its minimum and maximum beside the mean, so a one-reading spike in 30 days still reaches its
pixel column (a mean alone would flatten it). The width is chosen from a fixed ladder of round
steps aligned on the epoch, so the same range always gives the same buckets and each step is
a whole number of the roll-up buckets it is read from (queries.chart_query).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.service import get_device
from fleetcore.errors import Invalid
from fleetcore.telemetry import queries
from fleetcore.telemetry.query_schemas import Chart, ChartSeries, ChartSource, time_range
from fleetcore_protocol.telemetry import Kind

_S, _M, _H, _D = 1000, 60_000, 3_600_000, 86_400_000
# Round steps, finest first. Below a minute they are read from raw readings, which costs as
# many rows as the range holds (at most `width` minutes of them); from a minute on, from the
# coarsest roll-up that divides the step.
STEPS: tuple[int, ...] = (
    *(n * _S for n in (1, 2, 5, 10, 15, 30)),
    *(n * _M for n in (1, 2, 5, 10, 15, 30)),
    *(n * _H for n in (1, 2, 3, 6, 12)),
    *(n * _D for n in (1, 2, 7, 30)),
)
DEFAULT_WIDTH = 1000
MAX_WIDTH = 4000
# The coarsest step still gives at most this many buckets (a range of over 800 years).
MAX_BUCKETS = 10_000
SOURCE_NAMES: dict[int, ChartSource] = {0: "raw", _M: "1m", _H: "1h", _D: "1d"}


def bucket_count(start: int, end: int, step: int) -> int:
    """How many epoch-aligned buckets of `step` the range [start, end) touches."""
    if end <= start:
        return 0
    return (end - 1) // step - start // step + 1


def chart_step(start: int, end: int, width: int) -> int:
    """The finest step of the ladder that covers [start, end) in at most `width` buckets."""
    for step in STEPS:
        if bucket_count(start, end, step) <= width:
            return step
    step = STEPS[-1]
    count = bucket_count(start, end, step)
    if count > MAX_BUCKETS:
        raise Invalid(
            f"the range needs {count} buckets of the widest step; at most {MAX_BUCKETS}",
            code="TOO_MANY_BUCKETS",
            details={"field": "start", "buckets": count},
        )
    return step


async def read_chart(
    session: AsyncSession,
    principal: Principal,
    *,
    device_id: uuid.UUID,
    keys: Sequence[str],
    start: str | None,
    end: str | None,
    width: int,
) -> Chart:
    """Numeric keys of a device of the caller's organization, downsampled to `width` buckets."""
    start_ms, end_ms = time_range(start, end)
    step = chart_step(start_ms, end_ms, width)
    first = start_ms - start_ms % step
    stop = first + bucket_count(start_ms, end_ms, step) * step
    device = await get_device(session, principal, device_id)
    found = await queries.device_series(
        session, device.id, device.organization_id, keys, kind=Kind.NUMBER
    )
    series = await queries.chart_buckets(session, found, first, stop, step)
    return Chart(
        device_id=device.id,
        start=first,
        end=stop,
        step_ms=step,
        source=SOURCE_NAMES[queries.rollup_width(step)],
        series={
            key: ChartSeries(ts=c.ts, min=c.vmin, max=c.vmax, avg=c.avg)
            for key, c in series.items()
        },
    )
