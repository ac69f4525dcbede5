"""Reading telemetry through the API: raw pages, aggregates from the roll-ups, latest values."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import delete

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.models import VALUE_TABLES
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.tenants import Tenant, make_tenant

HOUR = 3_600_000
DAY = 24 * HOUR
# Five whole UTC days ago, so every range below is in the past and aligned.
BASE = (int(time.time() * 1000) // DAY - 5) * DAY
API = "/api/v1"


async def make_device(client: httpx.AsyncClient, tenant: Tenant) -> str:
    """A device registered through the API; returns its id."""
    body = {"name": "sensor", "serial_number": f"S-{uuid.uuid4().hex[:12]}"}
    response = await client.post(f"{API}/devices", headers=tenant.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    device_id: str = response.json()["id"]
    return device_id


async def write(
    database: Database, tenant: Tenant, device_id: str, readings: Iterable[Reading]
) -> None:
    """Store readings with the bulk writer, as the pipeline would."""
    item = DeviceReadings(uuid.UUID(device_id), tenant.org_id, list(readings))
    await TelemetryWriter(database.engine).write([item])


def num(key: str, ts: int, value: float) -> Reading:
    """A numeric reading."""
    return Reading(key, ts, Kind.NUMBER, float(value))


async def get(client: httpx.AsyncClient, tenant: Tenant, path: str, **params: Any) -> Any:
    """GET as the tenant's viewer (reading needs no more); asserts 200."""
    response = await client.get(f"{API}{path}", headers=tenant.headers(Role.VIEWER), params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def walk(
    client: httpx.AsyncClient, tenant: Tenant, device_id: str, **params: Any
) -> list[tuple[int, str, Any]]:
    """Every raw reading, page after page."""
    seen: list[tuple[int, str, Any]] = []
    cursor = None
    for _ in range(1000):
        page = await get(
            client,
            tenant,
            f"/devices/{device_id}/telemetry",
            **params,
            **({"cursor": cursor} if cursor else {}),
        )
        seen.extend((item["ts"], item["key"], item["value"]) for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never ended")


async def test_raw_pages_walk_every_row_once_in_both_orders(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    readings: list[Reading] = []
    for i in range(60):
        ts = BASE + i * 1000  # keys share timestamps: ties are ordered by key
        readings += [num("a", ts, i), Reading("b", ts, Kind.TEXT, f"t{i}")]
        if i % 2:
            readings.append(Reading("c", ts + (i % 3) * 500, Kind.BOOLEAN, i % 4 == 1))
        if i % 5 == 0:
            readings.append(Reading("d", ts, Kind.JSON, {"i": i, "list": [1, "x"]}))
    # One name in two kinds: two series that tie on (ts, key).
    readings += [num("m", BASE + 5000, 1), Reading("m", BASE + 5000, Kind.TEXT, "one")]
    await write(live_database, live_tenant, device_id, readings)
    stored = {(r.ts, r.key, r.kind): r.value for r in readings}
    expected = [(ts, key, value) for (ts, key, _), value in sorted(stored.items())]
    window = {"start": BASE, "end": BASE + HOUR}
    for limit in (7, 1000):
        forward = await walk(live_client, live_tenant, device_id, limit=limit, **window)
        assert forward == expected
        backward = await walk(
            live_client, live_tenant, device_id, limit=limit, order="desc", **window
        )
        assert backward == expected[::-1]


async def test_values_come_back_typed_and_keys_filter(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    await write(
        live_database,
        live_tenant,
        device_id,
        [
            num("temp", BASE, 21.5),
            Reading("door", BASE, Kind.TEXT, "open"),
            Reading("ok", BASE, Kind.BOOLEAN, True),
            Reading("gps", BASE, Kind.JSON, {"lat": 1.5, "tags": ["a"]}),
        ],
    )
    path = f"/devices/{device_id}/telemetry"
    page = await get(live_client, live_tenant, path, start=BASE, end=BASE + 1)
    assert page["device_id"] == device_id
    assert page["next_cursor"] is None
    assert {i["key"]: i["value"] for i in page["items"]} == {
        "door": "open",
        "gps": {"lat": 1.5, "tags": ["a"]},
        "ok": True,
        "temp": 21.5,
    }
    some = await get(live_client, live_tenant, path, start=BASE, end=BASE + 1, keys="ok,temp,nope")
    assert [i["key"] for i in some["items"]] == ["ok", "temp"]
    none = await get(live_client, live_tenant, path, start=BASE, end=BASE + 1, keys="nope")
    assert none["items"] == []


async def test_a_day_of_one_second_readings_is_one_page(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    day = [num("v", BASE + i * 1000, i / 8) for i in range(DAY // 1000)]
    await write(live_database, live_tenant, device_id, day)
    path = f"/devices/{device_id}/telemetry"
    page = await get(live_client, live_tenant, path, start=BASE, end=BASE + DAY, limit=100_000)
    assert page["next_cursor"] is None
    assert len(page["items"]) == len(day) == 86_400
    assert page["items"][::9_000] == [
        {"key": "v", "ts": r.ts, "value": r.value} for r in day[::9_000]
    ]
    cut = await get(live_client, live_tenant, path, start=BASE, end=BASE + DAY, limit=86_399)
    assert cut["items"][-1]["ts"] == day[-2].ts
    assert cut["next_cursor"] is not None


async def test_times_parse_as_iso_or_epoch_ms_and_bad_ones_are_named(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    now = int(time.time() * 1000)
    await write(
        live_database,
        live_tenant,
        device_id,
        [
            num("t", BASE + 1000, 1),
            num("t", BASE + 2000, 2),
            num("t", now - 25 * HOUR, 3),
            num("t", now - HOUR, 4),
        ],
    )
    path = f"/devices/{device_id}/telemetry"
    as_ms = await get(live_client, live_tenant, path, start=BASE + 1000, end=BASE + 2000)
    moment = datetime.fromtimestamp((BASE + 1000) / 1000, UTC)
    forms = [
        (moment.isoformat().replace("+00:00", "Z"), (moment + timedelta(seconds=1)).isoformat()),
        (moment.replace(tzinfo=None).isoformat(), str(BASE + 2000)),
        (moment.astimezone(timezone(timedelta(hours=2))).isoformat(), str(BASE + 2000)),
    ]
    for start, end in forms:
        page = await get(live_client, live_tenant, path, start=start, end=end)
        assert page == as_ms, (start, end)
    # An offset's "+" left unencoded arrives as a space; it still means the offset.
    east = moment.astimezone(timezone(timedelta(hours=3, minutes=30)))
    unencoded = await live_client.get(
        f"{API}{path}?start={east.isoformat()}&end={BASE + 2000}",
        headers=live_tenant.headers(Role.VIEWER),
    )
    assert unencoded.json() == as_ms
    assert [i["value"] for i in as_ms["items"]] == [1.0]  # end is exclusive
    # The default range is the last 24 hours.
    assert [i["value"] for i in (await get(live_client, live_tenant, path))["items"]] == [4.0]
    headers = live_tenant.headers(Role.VIEWER)
    for params, field in [
        ({"start": "yesterday"}, "start"),
        ({"end": "2024-13-01T00:00:00Z"}, "end"),
        ({"start": str(BASE + 10), "end": str(BASE)}, "start"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"start": "nonsense", "interval": "1h"}, "start"),
    ]:
        response = await live_client.get(f"{API}{path}", headers=headers, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["details"]["field"] == field
    for params in ({"limit": 0}, {"limit": 100_001}, {"interval": "2h"}, {"agg": "median"}):
        response = await live_client.get(f"{API}{path}", headers=headers, params=params)
        assert response.status_code == 422, params


def expected_buckets(
    rows: list[tuple[int, float]], start: int, end: int, width: int, agg: str
) -> list[tuple[int, float | None]]:
    """Every bucket of [start, end) aggregated from raw rows, computed here independently."""
    out = []
    first = start - start % width
    for bucket in range(first, end, width):
        inside = sorted((ts, v) for ts, v in rows if bucket <= ts < bucket + width)
        values = [v for _, v in inside]
        if not values:
            out.append((bucket, None))
            continue
        result = {
            "avg": sum(values) / len(values) if values else None,
            "sum": sum(values),
            "count": len(values),
            "min": min(values),
            "max": max(values),
            "first": inside[0][1],
            "last": inside[-1][1],
        }[agg]
        out.append((bucket, result))
    return out


def assert_same(got: list[tuple[int, Any]], want: list[tuple[int, Any]]) -> None:
    """Bucket lists equal, floats to rounding."""
    assert [b for b, _ in got] == [b for b, _ in want]
    for (bucket, g), (_, w) in zip(got, want, strict=True):
        if w is None or g is None:
            assert g == w, bucket
        else:
            assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (bucket, g, w)


async def test_aggregates_match_the_raw_data_for_every_agg_and_interval(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    rng = random.Random(7)
    span = 2 * DAY
    # Dense first hours, then sparse with long gaps, so buckets of every size are empty too.
    stamps = {BASE + rng.randrange(0, 3 * HOUR) for _ in range(600)}
    stamps |= {BASE + rng.randrange(3 * HOUR, span) for _ in range(150)}
    rows = {"a": [(ts, round(rng.uniform(-50, 50), 3)) for ts in sorted(stamps)]}
    rows["b"] = [(ts, float(rng.randrange(100))) for ts in sorted(stamps)[::7]]
    on_time = {k: [r for r in v if r[0] % 3] for k, v in rows.items()}
    late = {k: [r for r in v if not r[0] % 3] for k, v in rows.items()}
    for batch in (on_time, late):  # late data arrives after newer rows are stored
        readings = [num(key, ts, value) for key, pairs in batch.items() for ts, value in pairs]
        rng.shuffle(readings)
        await write(live_database, live_tenant, device_id, readings)
    await write(live_database, live_tenant, device_id, [Reading("s", BASE, Kind.TEXT, "x")])
    path = f"/devices/{device_id}/telemetry"
    start, end = BASE + 17 * 60_000 + 123, BASE + span - 1
    intervals = [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", HOUR), ("1d", DAY)]
    for interval, width in intervals:
        if interval == "1m":
            start_i, end_i = BASE, BASE + 3 * HOUR
        else:
            start_i, end_i = start, end
        for agg in ("avg", "min", "max", "sum", "count", "first", "last"):
            answer = await get(
                live_client,
                live_tenant,
                path,
                keys="a,b,nope",
                start=start_i,
                end=end_i,
                interval=interval,
                agg=agg,
            )
            first = start_i - start_i % width
            assert (answer["interval"], answer["agg"], answer["start"]) == (interval, agg, first)
            assert answer["end"] == answer["buckets"][-1]["ts"] + width
            assert answer["end"] >= end_i
            for key in ("a", "b"):
                got = [(b["ts"], b["values"][key]) for b in answer["buckets"]]
                assert_same(got, expected_buckets(rows[key], first, end_i, width, agg))
            assert all(b["values"]["nope"] is None for b in answer["buckets"])
            if agg == "count" and width < DAY:  # sparse data: some buckets are empty
                assert any(b["values"]["a"] is None for b in answer["buckets"])
    # Without keys: every numeric key; text keys have no aggregate.
    default = await get(live_client, live_tenant, path, start=start, end=end, interval="1h")
    assert set(default["buckets"][0]["values"]) == {"a", "b"}
    # Aggregates never read raw rows: with the raw rows gone, the answer is the same.
    before = await get(
        live_client, live_tenant, path, start=start, end=end, interval="5m", agg="max"
    )
    async with live_database.session() as session:
        await session.execute(delete(VALUE_TABLES[Kind.NUMBER]))
        await session.commit()
    after = await get(
        live_client, live_tenant, path, start=start, end=end, interval="5m", agg="max"
    )
    assert after == before
    assert any(b["values"]["a"] is not None for b in after["buckets"])


async def test_bucket_limits_and_agg_without_interval(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id = await make_device(live_client, live_tenant)
    headers = live_tenant.headers(Role.VIEWER)
    path = f"{API}/devices/{device_id}/telemetry"
    month = {"start": BASE - 30 * DAY, "end": BASE}
    too_many = await live_client.get(path, headers=headers, params={**month, "interval": "1m"})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "TOO_MANY_BUCKETS"
    ok = await live_client.get(path, headers=headers, params={**month, "interval": "5m"})
    assert ok.status_code == 200
    assert len(ok.json()["buckets"]) == 30 * 288
    assert all(b["values"] == {} for b in ok.json()["buckets"])  # no numeric key yet
    lone = await live_client.get(path, headers=headers, params={"agg": "max"})
    assert lone.status_code == 422
    assert lone.json()["error"]["details"]["field"] == "agg"


async def test_latest_of_one_and_many_devices(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    first = await make_device(live_client, live_tenant)
    second = await make_device(live_client, live_tenant)
    quiet = await make_device(live_client, live_tenant)
    other = await make_tenant(live_client, live_database)
    foreign = await make_device(live_client, other)
    await write(
        live_database,
        live_tenant,
        first,
        [num("t", BASE, 1), num("t", BASE + 10, 2), Reading("s", BASE + 5, Kind.TEXT, "on")],
    )
    await write(live_database, live_tenant, first, [num("t", BASE + 3, 9)])  # late: not newer
    await write(live_database, live_tenant, second, [Reading("j", BASE, Kind.JSON, [1, 2])])
    await write(live_database, other, foreign, [num("t", BASE, 5)])
    one = await get(live_client, live_tenant, f"/devices/{first}/telemetry/latest")
    assert one == {
        "device_id": first,
        "values": {"t": {"ts": BASE + 10, "value": 2.0}, "s": {"ts": BASE + 5, "value": "on"}},
    }
    ids = ",".join([first, second, quiet, foreign, str(uuid.uuid4())])
    many = await get(live_client, live_tenant, "/telemetry/latest", device_ids=ids)
    assert many == {
        "devices": {
            first: one["values"],
            second: {"j": {"ts": BASE, "value": [1, 2]}},
            quiet: {},
        }
    }
    headers = live_tenant.headers(Role.VIEWER)
    too_many = ",".join(str(uuid.uuid4()) for _ in range(501))
    for value in (too_many, "not-a-uuid"):
        response = await live_client.get(
            f"{API}/telemetry/latest", headers=headers, params={"device_ids": value}
        )
        assert response.status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/telemetry",
        "/telemetry?interval=1h",
        "/telemetry/latest",
        "/telemetry/export",
        "/telemetry/export?format=parquet",
    ],
)
async def test_another_organization_gets_404(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database, path: str
) -> None:
    device_id = await make_device(live_client, live_tenant)
    await write(live_database, live_tenant, device_id, [num("t", BASE, 1)])
    other = await make_tenant(live_client, live_database)
    response = await live_client.get(
        f"{API}/devices/{device_id}{path}", headers=other.headers(Role.ADMIN)
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "DEVICE_NOT_FOUND"
