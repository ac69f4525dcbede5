"""HTTP ingest through the real pipeline into both databases."""

from __future__ import annotations

import time
from typing import Any

import httpx
from sqlalchemy import func, select

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.models import LATEST, ROLLUP_1H, ROLLUP_1M, VALUE_TABLES
from fleetcore_protocol.telemetry import Kind
from tests.support.tenants import Tenant


async def _device(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> tuple[str, str]:
    body = {"name": "sensor", "serial_number": f"S-{time.monotonic_ns()}", **extra}
    response = await client.post("/api/v1/devices", headers=tenant.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["access_token"]


async def _count(db: Database, kind: Kind) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(VALUE_TABLES[kind])) or 0)


async def test_all_body_shapes_and_kinds_are_stored(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    now = int(time.time() * 1000)
    headers = {"X-Device-Token": token}
    bodies: list[Any] = [
        {"temperature": 21.5, "door": "open", "ok": True, "gps": {"lat": 1.5}},
        {"ts": now - 60_000, "values": {"temperature": 20.0}},
        [{"ts": now - 120_000, "values": {"temperature": 19.0}}, {"humidity": 40}],
    ]
    for body in bodies:
        response = await live_client.post(
            "/api/v1/devices/me/telemetry", headers=headers, json=body
        )
        assert response.status_code == 200, response.text
        assert response.json()["rejected"] == []
    assert await _count(live_database, Kind.NUMBER) == 4
    assert await _count(live_database, Kind.TEXT) == 1
    assert await _count(live_database, Kind.BOOLEAN) == 1
    assert await _count(live_database, Kind.JSON) == 1


async def test_thingsboard_path_token(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    response = await live_client.post(f"/api/v1/{token}/telemetry", json={"t": 1})
    assert response.status_code == 200
    assert response.json()["stored"] == 1
    bad = await live_client.post("/api/v1/fcd_not_a_token/telemetry", json={"t": 1})
    assert bad.status_code == 401


async def test_same_reading_is_stored_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    body = {"ts": int(time.time() * 1000) - 5000, "values": {"t": 1.0, "u": 2.0}}
    answers = []
    for _ in range(3):
        response = await live_client.post(
            "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json=body
        )
        answers.append((response.json()["stored"], response.json()["duplicates"]))
    assert answers == [(2, 0), (0, 2), (0, 2)]
    assert await _count(live_database, Kind.NUMBER) == 2
    async with live_database.session() as session:
        counts = (await session.execute(select(ROLLUP_1M.c.cnt))).scalars().all()
    assert sorted(counts) == [1, 1]


async def test_partial_batch_keeps_good_readings_and_names_bad(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    now = int(time.time() * 1000)
    response = await live_client.post(
        "/api/v1/devices/me/telemetry",
        headers={"Authorization": f"Bearer {token}"},
        json=[
            {"ts": now, "values": {"good": 1, "bad key": 2}},
            {"ts": now + 86_400_000, "values": {"future": 3}},
        ],
    )
    assert response.status_code == 200
    body = response.json()
    assert body["stored"] == 1
    assert {(p["code"], p.get("key"), p.get("item")) for p in body["rejected"]} == {
        ("KEY_INVALID", "bad key", 0),
        ("TS_IN_FUTURE", None, 1),
    }
    assert await _count(live_database, Kind.NUMBER) == 1


async def test_unusable_payloads_change_nothing(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    headers = {"X-Device-Token": token, "content-type": "application/json"}
    cases = [
        (b"{not json", 422, "MALFORMED_JSON"),
        (b"[]", 422, "EMPTY"),
        (b"17", 422, "SHAPE_INVALID"),
        (b'{"k": null}', 422, "NO_VALID_READINGS"),
        (b'{"k": "' + b"x" * 300_000 + b'"}', 413, "PAYLOAD_TOO_LARGE"),
    ]
    for body, status, code in cases:
        response = await live_client.post(
            "/api/v1/devices/me/telemetry", headers=headers, content=body
        )
        assert response.status_code == status, (body[:20], response.text)
        assert response.json()["error"]["code"] == code
    assert sum([await _count(live_database, kind) for kind in Kind]) == 0


async def test_unknown_or_disabled_token_is_401(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id, token = await _device(live_client, live_tenant)
    unknown = await live_client.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": "fcd_nope"}, json={"t": 1}
    )
    assert unknown.status_code == 401
    await live_client.patch(
        f"/api/v1/devices/{device_id}",
        headers=live_tenant.headers(Role.MANAGER),
        json={"status": "disabled"},
    )
    disabled = await live_client.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": token}, json={"t": 1}
    )
    assert disabled.status_code == 401
    assert await _count(live_database, Kind.NUMBER) == 0


async def test_profile_validation_reject_and_flag(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    headers = live_tenant.headers(Role.MANAGER)
    keys = [{"key": "t", "type": "number", "min": 0, "max": 100}, {"key": "s", "type": "string"}]
    strict = (
        await live_client.post(
            "/api/v1/device-profiles",
            headers=headers,
            json={"name": "strict", "telemetry_keys": keys},
        )
    ).json()
    lenient = (
        await live_client.post(
            "/api/v1/device-profiles",
            headers=headers,
            json={"name": "lenient", "telemetry_keys": keys, "out_of_range": "flag"},
        )
    ).json()
    _, strict_token = await _device(live_client, live_tenant, profile_id=strict["id"])
    _, lenient_token = await _device(live_client, live_tenant, profile_id=lenient["id"])
    payload = {"t": 150, "s": 5, "x": 1}
    refused = await live_client.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": strict_token}, json=payload
    )
    assert refused.status_code == 422
    codes = {p["code"] for p in refused.json()["error"]["details"]["rejected"]}
    assert codes == {"OUT_OF_RANGE", "TYPE_MISMATCH", "KEY_UNKNOWN"}
    flagged = await live_client.post(
        "/api/v1/devices/me/telemetry", headers={"X-Device-Token": lenient_token}, json=payload
    )
    assert flagged.status_code == 200
    assert flagged.json()["stored"] == 1
    assert [p["code"] for p in flagged.json()["flagged"]] == ["OUT_OF_RANGE"]
    assert await _count(live_database, Kind.NUMBER) == 1


async def test_latest_never_moves_backwards_and_rollups_merge_late_data(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    headers = {"X-Device-Token": token}
    minute = (int(time.time() * 1000) // 3_600_000 - 1) * 3_600_000  # an hour ago, on the hour
    for ts, value in [(minute + 30_000, 5.0), (minute + 50_000, 7.0), (minute + 10_000, 1.0)]:
        response = await live_client.post(
            "/api/v1/devices/me/telemetry", headers=headers, json={"ts": ts, "values": {"t": value}}
        )
        assert response.status_code == 200
    async with live_database.session() as session:
        latest = (await session.execute(select(LATEST.c.ts, LATEST.c.num))).one()
        rollup = (await session.execute(select(ROLLUP_1M))).one()
        hourly = (await session.execute(select(ROLLUP_1H))).one()
    assert tuple(latest) == (minute + 50_000, 7.0)
    assert (rollup.bucket, rollup.cnt, rollup.total, rollup.vmin, rollup.vmax) == (
        minute,
        3,
        13.0,
        1.0,
        7.0,
    )
    assert (rollup.first_ts, rollup.vfirst, rollup.last_ts, rollup.vlast) == (
        minute + 10_000,
        1.0,
        minute + 50_000,
        7.0,
    )
    assert (hourly.bucket, hourly.cnt) == (minute, 3)


async def test_ingest_metrics_are_exposed(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    headers = {"X-Device-Token": token}
    await live_client.post(
        "/api/v1/devices/me/telemetry", headers=headers, json={"m": 1, "bad key": 2}
    )
    text = (await live_client.get("/metrics")).text
    for name in (
        'fleetcore_telemetry_readings_accepted_total{transport="http"}',
        'fleetcore_telemetry_readings_rejected_total{reason="KEY_INVALID"}',
        "fleetcore_telemetry_readings_stored_total",
        "fleetcore_telemetry_readings_deduplicated_total",
        "fleetcore_telemetry_batch_size_bucket",
        "fleetcore_telemetry_write_seconds_bucket",
        "fleetcore_telemetry_queue_depth",
    ):
        assert name in text, name


async def test_nul_in_a_value_is_refused_not_fatal_to_the_batch(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await _device(live_client, live_tenant)
    response = await live_client.post(
        "/api/v1/devices/me/telemetry",
        headers={"X-Device-Token": token, "content-type": "application/json"},
        content=b'{"s": "a\\u0000b", "j": {"k": "\\u0000"}, "n": 1}',
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1
    assert {p["key"] for p in response.json()["rejected"]} == {"s", "j"}
    assert await _count(live_database, Kind.NUMBER) == 1


async def test_cached_token_lookups_never_outlive_a_change(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    """Ingest caches token lookups; rotation, disabling and profile edits apply at once."""
    headers = live_tenant.headers(Role.MANAGER)
    profile = (
        await live_client.post("/api/v1/device-profiles", headers=headers, json={"name": "p"})
    ).json()
    device_id, token = await _device(live_client, live_tenant, profile_id=profile["id"])
    url = "/api/v1/devices/me/telemetry"

    async def post(tok: str, body: dict[str, Any]) -> httpx.Response:
        return await live_client.post(url, headers={"X-Device-Token": tok}, json=body)

    assert (await post(token, {"t": 1})).status_code == 200  # now cached
    await live_client.patch(
        f"/api/v1/device-profiles/{profile['id']}",
        headers=headers,
        json={"telemetry_keys": [{"key": "t", "type": "number", "max": 10}]},
    )
    assert (await post(token, {"t": 50})).status_code == 422  # the new range applies
    rotated = await live_client.post(
        f"/api/v1/devices/{device_id}/credentials/rotate", headers=headers
    )
    new_token = rotated.json()["access_token"]
    assert (await post(token, {"t": 2})).status_code == 401
    assert (await post(new_token, {"t": 3})).status_code == 200
    await live_client.patch(
        f"/api/v1/devices/{device_id}", headers=headers, json={"status": "disabled"}
    )
    assert (await post(new_token, {"t": 4})).status_code == 401
    await live_client.delete(f"/api/v1/devices/{device_id}", headers=headers)
    assert (await post(new_token, {"t": 5})).status_code == 401
    assert await _count(live_database, Kind.NUMBER) == 2
