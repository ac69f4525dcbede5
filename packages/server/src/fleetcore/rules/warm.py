"""Give the engine its view of a device it has not seen since it started: the latest value
of every key, and the recent samples its rate rules need, from what is stored."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.rules.conditions import DeviceView
from fleetcore.rules.index import RuleIndex
from fleetcore.telemetry.queries import device_series, latest_values, read_rows
from fleetcore.telemetry.query_schemas import now_ms

MAX_WINDOW_SAMPLES = 10_000


async def warm_views(
    session: AsyncSession,
    index: RuleIndex,
    cold: dict[uuid.UUID, set[str]],
    first_ts: dict[uuid.UUID, int],
    *,
    windows: bool = True,
) -> dict[uuid.UUID, DeviceView]:
    """Views of the `cold` devices. Keys in the batch being evaluated (the set per device)
    are left out: the batch brings them, in order, from `first_ts` on. `windows=False`
    skips the rate windows (latest values only)."""
    by_org: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for device_id in cold:
        meta = index.devices.get(device_id)
        if meta is not None:
            by_org[meta.organization_id].append(device_id)
    views: dict[uuid.UUID, DeviceView] = {}
    for org_id, device_ids in by_org.items():
        latest = await latest_values(session, org_id, device_ids)
        for device_id in device_ids:
            view = DeviceView(since=index.devices[device_id].created_ms)
            spans = index.plan(device_id).windows if windows else {}
            if spans:
                await _load_windows(
                    session, org_id, device_id, view, spans, first_ts.get(device_id)
                )
            skip = cold[device_id]
            for key, value in latest.get(device_id, {}).items():
                if key not in skip:  # (after the windows: the latest value wins)
                    view.values[key] = (value.ts, value.value)
                    view.last_ts = max(view.last_ts or value.ts, value.ts)
            views[device_id] = view
    return views


async def _load_windows(
    session: AsyncSession,
    org_id: uuid.UUID,
    device_id: uuid.UUID,
    view: DeviceView,
    windows: dict[str, int],
    until: int | None,
) -> None:
    """The samples of each rate key in its window, up to the batch (or the newest)."""
    series = await device_series(session, device_id, org_id, list(windows))
    for ref in series:
        end = until if until is not None else now_ms() + 1
        rows = await read_rows(
            session, [ref], end - windows[ref.key], end, limit=MAX_WINDOW_SAMPLES
        )
        for row in rows:
            view.update(row.key, row.ts, row.value, windows[ref.key])
