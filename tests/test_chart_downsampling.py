"""Charts downsampled to their width: the step chosen from range and width, and the chart
route's buckets checked against min, max and mean recomputed from the raw readings."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.errors import Invalid
from fleetcore.telemetry.chart import MAX_BUCKETS, STEPS, bucket_count, chart_step
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.tenants import Tenant
from tests.test_telemetry_queries import make_device, num, write

S, M, H, D = 1000, 60_000, 3_600_000, 86_400_000
BASE = (int(time.time() * 1000) // D - 40) * D  # 40 whole days ago


@pytest.mark.parametrize(
    ("span", "width", "step"),
    [
        (H, 1200, 5 * S),  # 3 s per column: the next round step
        (H, 3600, S),
        (D, 1200, 2 * M),  # 72 s per column
        (D, 1440, M),  # exactly one minute per column
        (7 * D, 1200, 10 * M),
        (30 * D, 1200, H),  # 36 min per column
        (30 * D, 300, 3 * H),
        (365 * D, 1200, 12 * H),
        (365 * D, 365, D),
        (10 * 365 * D, 1200, 7 * D),
        (5 * S, 1200, S),  # shorter than a column each: the finest step
    ],
)
def test_the_step_is_the_finest_that_fits_the_width(span: int, width: int, step: int) -> None:
    start = BASE
    assert chart_step(start, start + span, width) == step
    assert bucket_count(start, start + span, step) <= width
    finer = [s for s in STEPS if s < step]
    assert all(bucket_count(start, start + span, s) > width for s in finer)


def test_an_unaligned_range_counts_its_partial_buckets() -> None:
    # 30 days starting mid-hour touch 721 hourly buckets: 720 columns need 2 h.
    start = BASE + 30 * M
    assert bucket_count(start, start + 30 * D, H) == 721
    assert chart_step(start, start + 30 * D, 720) == 2 * H
    assert chart_step(start, start + 30 * D, 721) == H


def test_a_range_too_long_for_the_widest_step_is_refused() -> None:
    with pytest.raises(Invalid) as refused:
        chart_step(0, (MAX_BUCKETS + 1) * STEPS[-1], 1)
    assert refused.value.code == "TOO_MANY_BUCKETS"


def expected(readings: list[Reading], first: int, stop: int, step: int) -> dict[int, Any]:
    """(min, max, mean) per bucket start, from the raw readings."""
    buckets: dict[int, list[float]] = defaultdict(list)
    for r in readings:
        if first <= r.ts < stop:
            buckets[r.ts - r.ts % step].append(r.value)
    return {b: (min(v), max(v), sum(v) / len(v)) for b, v in sorted(buckets.items())}


def assert_matches(series: dict[str, list[Any]], want: dict[int, Any]) -> None:
    assert series["ts"] == list(want)
    for i, (lo, hi, mean) in enumerate(want.values()):
        assert series["min"][i] == lo
        assert series["max"][i] == hi
        assert series["avg"][i] == pytest.approx(mean, rel=1e-9)


async def chart(
    client: httpx.AsyncClient, tenant: Tenant, device_id: str, **params: Any
) -> httpx.Response:
    return await client.get(
        f"/api/v1/devices/{device_id}/telemetry/chart",
        headers=tenant.headers(Role.VIEWER),
        params=params,
    )


async def test_a_long_range_keeps_every_buckets_extremes_and_a_lone_spike(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    # 30 days of one reading a minute, a daily cycle, and one reading far above the rest.
    spike = BASE + 17 * D + 5 * H + 23 * M
    readings = [
        num("t", ts, 1000.0 if ts == spike else 20 + (ts // M) % 1440 / 100)
        for ts in range(BASE, BASE + 30 * D, M)
    ]
    readings.append(Reading("state", BASE, Kind.TEXT, "on"))  # not a number: never charted
    await write(live_database, live_tenant, device_id, readings)
    numbers = [r for r in readings if r.kind is Kind.NUMBER]

    answer = await chart(
        live_client, live_tenant, device_id, start=BASE, end=BASE + 30 * D, width=600
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["step_ms"], body["source"], body["start"], body["end"]) == (
        2 * H,
        "1h",
        BASE,
        BASE + 30 * D,
    )
    assert set(body["series"]) == {"t"}
    series = body["series"]["t"]
    assert len(series["ts"]) == 360 <= 600
    assert_matches(series, expected(numbers, BASE, BASE + 30 * D, 2 * H))
    peak = series["max"].index(1000.0)
    assert series["ts"][peak] == spike - spike % (2 * H)
    assert series["avg"][peak] < 100  # the mean alone would have hidden it

    # The same data over a day at 1,000 px: 2-minute buckets from the 1-minute roll-up.
    day = BASE + 17 * D
    body = (await chart(live_client, live_tenant, device_id, start=day, end=day + D)).json()
    assert (body["step_ms"], body["source"]) == (2 * M, "1m")
    assert_matches(body["series"]["t"], expected(numbers, day, day + D, 2 * M))


async def test_a_short_range_is_bucketed_from_raw_readings(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    # Two keys, 700 ms apart, so a 5 s bucket holds several readings (and a gap of silence).
    readings = [
        num("a", BASE + i * 700, (i * 37) % 101) for i in range(5000) if not 2000 < i < 2600
    ]
    readings += [num("b", BASE + i * 1300, -i / 7) for i in range(100)]
    await write(live_database, live_tenant, device_id, readings)
    start, end = BASE + 1234, BASE + H + 1234  # unaligned: whole buckets at both ends
    body = (
        await chart(live_client, live_tenant, device_id, start=start, end=end, width=1200)
    ).json()
    assert (body["step_ms"], body["source"]) == (5 * S, "raw")
    first, stop = start - start % (5 * S), end - end % (5 * S) + 5 * S
    assert (body["start"], body["end"]) == (first, stop)
    for key in ("a", "b"):
        want = expected([r for r in readings if r.key == key], first, stop, 5 * S)
        assert_matches(body["series"][key], want)
    only_b = (
        await chart(live_client, live_tenant, device_id, start=start, end=end, keys="b,missing")
    ).json()
    assert set(only_b["series"]) == {"b"}


async def test_late_readings_reach_the_chart(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    await write(
        live_database, live_tenant, device_id, [num("t", BASE + i * H, 1) for i in range(48)]
    )
    await write(live_database, live_tenant, device_id, [num("t", BASE + 30 * M, -50)])  # late
    body = (
        await chart(live_client, live_tenant, device_id, start=BASE, end=BASE + 2 * D, width=8)
    ).json()
    assert body["step_ms"] == 6 * H
    assert body["series"]["t"]["min"][0] == -50
    assert body["series"]["t"]["max"][0] == 1


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"width": 0}, 422, None),
        ({"width": 4001}, 422, None),
        ({"width": "wide"}, 422, None),
        ({"start": "yesterday"}, 422, "INVALID_TIME"),
        ({"start": 2 * D, "end": D}, 422, "INVALID_RANGE"),
        ({"start": 0, "end": 10**15 - 1}, 422, "TOO_MANY_BUCKETS"),
    ],
)
async def test_bad_chart_requests_are_refused_with_the_envelope(
    client: httpx.AsyncClient, tenant: Tenant, params: dict[str, Any], status: int, code: str | None
) -> None:
    device_id = await make_device(client, tenant)
    answer = await chart(client, tenant, device_id, **params)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert code is None or error["code"] == code


async def test_another_organizations_device_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    device_id = await make_device(client, tenant)
    answer = await chart(client, other_tenant, device_id)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "DEVICE_NOT_FOUND"
