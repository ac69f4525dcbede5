"""Retention and daily partitions: real data on SQLite and PostgreSQL, the policy API."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import Table, func, select

from fleetcore.auth import users
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.devices.service import new_device
from fleetcore.telemetry import partitions
from fleetcore.telemetry.models import ROLLUP_1H, ROLLUP_1M, VALUE_TABLES, Retention, Series
from fleetcore.telemetry.partitions import DAY_MS, day_of, day_start_ms, partition_name
from fleetcore.telemetry.retention import RUNNER_LOCK_KEY, Policy, run_retention
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.postgres import PG_ONLY
from tests.support.tenants import Tenant

DEFAULTS = Policy(90, 365, 0)
NUM = VALUE_TABLES[Kind.NUMBER]
TABLES = [t.name for t in VALUE_TABLES.values()]


def _now() -> int:
    return int(time.time() * 1000)


async def _org(db: Database, policy: Policy | None = None) -> tuple[uuid.UUID, uuid.UUID]:
    """An organization (with `policy` when given) and one device of it."""
    slug = f"org-{uuid.uuid4().hex[:8]}"
    async with db.session() as session:
        org = await users.create_organization(
            session, None, data=OrganizationIn(name=slug, slug=slug)
        )
        device, _ = new_device(org.id, name="sensor", serial_number=slug)
        session.add(device)
        if policy is not None:
            session.add(
                Retention(
                    organization_id=org.id,
                    raw_days=policy.raw_days,
                    rollup_1m_days=policy.rollup_1m_days,
                    rollup_1h_days=policy.rollup_1h_days,
                )
            )
        await session.commit()
        return org.id, device.id


async def _set(db: Database, org_id: uuid.UUID, policy: Policy) -> None:
    async with db.session() as session:
        row = await session.get(Retention, org_id)
        assert row is not None
        row.raw_days, row.rollup_1m_days = policy.raw_days, policy.rollup_1m_days
        row.rollup_1h_days = policy.rollup_1h_days
        await session.commit()


async def _write(db: Database, org_id: uuid.UUID, device_id: uuid.UUID, stamps: list[int]) -> None:
    readings = [Reading("t", ts, Kind.NUMBER, float(i)) for i, ts in enumerate(stamps)]
    result = await TelemetryWriter(db.engine).write([DeviceReadings(device_id, org_id, readings)])
    assert len(result.stored) == len(stamps)


async def _count(db: Database, org_id: uuid.UUID, table: Table = NUM) -> int:
    join = table.join(Series, Series.id == table.c.series_id)
    query = select(func.count()).select_from(join).where(Series.organization_id == org_id)
    async with db.session() as session:
        return int(await session.scalar(query) or 0)


async def _rows_in(db: Database, table: str) -> int:
    async with db.engine.connect() as connection:
        result = await connection.exec_driver_sql(f"SELECT count(*) FROM {table}")  # noqa: S608
        return int(result.scalar_one())


async def _attached(db: Database) -> set[str]:
    async with db.engine.connect() as connection:
        return {n for t in TABLES for n in await partitions.children(connection, t)}


# Partitions exist on PostgreSQL only: these tests run there and not on SQLite.


def _deleted(table: str) -> float:
    value = REGISTRY.get_sample_value(
        "fleetcore_telemetry_retention_rows_deleted_total", {"table": table}
    )
    return value or 0.0


async def test_partitions_are_created_ahead_and_idempotent(live_database: Database) -> None:
    later = _now() + 30 * DAY_MS  # days no other test creates
    created = await partitions.ensure_partitions(live_database.engine, days_ahead=2, now_ms=later)
    if live_database.dialect != "postgresql":
        assert created == []
        return
    try:
        days = [day_of(later) + timedelta(days=d) for d in range(-1, 3)]
        expected = {partition_name(t, day) for t in TABLES for day in days}
        assert set(created) == expected
        assert expected <= await _attached(live_database)
        again = await partitions.ensure_partitions(live_database.engine, days_ahead=2, now_ms=later)
        assert again == []
    finally:
        made = [partitions.parse_partition(name) for name in created]
        await partitions.drop(live_database.engine, [p for p in made if p is not None])


async def test_app_start_creates_partitions_and_registers_jobs(
    live_app: FastAPI, live_database: Database
) -> None:
    names = live_app.state.jobs.names
    assert "telemetry-retention" in names
    if live_database.dialect != "postgresql":
        assert "telemetry-partitions" not in names
        return
    assert "telemetry-partitions" in names
    today = day_of(_now())
    wanted = {partition_name(t, today + timedelta(days=d)) for t in TABLES for d in range(-1, 8)}
    assert wanted <= await _attached(live_database)


@PG_ONLY
async def test_rows_waiting_in_the_default_partition_move_into_the_new_day(
    live_database: Database,
) -> None:
    org_id, device_id = await _org(live_database)
    start = day_start_ms(day_of(_now() - 20 * DAY_MS))
    stamps = [start + 3_600_000 + i * 1000 for i in range(5)]
    name = partition_name("ts_num", day_of(start))
    try:
        await _write(live_database, org_id, device_id, stamps)
        assert await _rows_in(live_database, "ts_num_default") == 5
        created = await partitions.ensure_partitions(
            live_database.engine, days_ahead=0, now_ms=start
        )
        assert name in created
        assert await _rows_in(live_database, name) == 5
        assert await _rows_in(live_database, "ts_num_default") == 0
        assert await _count(live_database, org_id) == 5
        # The moved rows still de-duplicate: the attached partition carries the key.
        readings = [Reading("t", ts, Kind.NUMBER, 0.0) for ts in stamps]
        again = await TelemetryWriter(live_database.engine).write(
            [DeviceReadings(device_id, org_id, readings)]
        )
        assert (len(again.stored), again.duplicates) == (0, 5)
    finally:
        await partitions.drop_partitions_before(live_database.engine, start + 2 * DAY_MS)


@PG_ONLY
async def test_old_partitions_are_dropped_only_when_no_organization_needs_them(
    live_database: Database,
) -> None:
    now = _now()
    short_org, short_dev = await _org(live_database, Policy(30, 365, 0))
    long_org, long_dev = await _org(live_database, Policy(60, 365, 0))
    old = day_start_ms(day_of(now - 40 * DAY_MS)) + 60_000
    old_days = {day_of(old - DAY_MS), day_of(old)}
    try:
        await partitions.ensure_partitions(live_database.engine, days_ahead=0, now_ms=old)
        for org_id, device_id in ((short_org, short_dev), (long_org, long_dev)):
            await _write(live_database, org_id, device_id, [old, old + 1000, now - 1000])

        first = await run_retention(live_database.engine, defaults=DEFAULTS, now_ms=now)
        assert first.partitions_dropped == []
        assert first.rows_deleted["ts_num"] == 2
        assert (await _count(live_database, short_org), await _count(live_database, long_org)) == (
            1,
            3,
        )

        await _set(live_database, long_org, Policy(35, 365, 0))
        second = await run_retention(live_database.engine, defaults=DEFAULTS, now_ms=now)
        assert set(second.partitions_dropped) == {
            partition_name(t, day) for t in TABLES for day in old_days
        }
        assert not {p.day for p in await partitions.daily_partitions(live_database.engine)} & (
            old_days
        )
        assert await _count(live_database, long_org) == 1  # today's reading stays
    finally:
        await partitions.drop(
            live_database.engine,
            [
                p
                for p in await partitions.daily_partitions(live_database.engine)
                if p.day in old_days
            ],
        )


async def test_chunked_deletes_remove_one_organizations_rows_and_leave_the_others(
    live_database: Database,
) -> None:
    now = _now()
    brief_org, brief_dev = await _org(live_database, Policy(7, 365, 0))
    other_org, other_dev = await _org(live_database)  # the defaults: 90 days
    old = now - 10 * DAY_MS
    stamps = [old + i for i in range(350)]
    await _write(live_database, brief_org, brief_dev, [*stamps, now])
    await _write(live_database, other_org, other_dev, [*stamps, now])
    before = _deleted("ts_num")

    report = await run_retention(
        live_database.engine, defaults=DEFAULTS, chunk_rows=100, now_ms=now
    )

    # Four chunks of at most 100. At least: the database is shared with the worker's other
    # tests, whose expired rows this run may delete too; the counts below are this test's.
    assert report.rows_deleted["ts_num"] >= 350
    assert _deleted("ts_num") - before == report.rows_deleted["ts_num"]
    assert await _count(live_database, brief_org) == 1
    assert await _count(live_database, other_org) == 351
    if live_database.dialect == "postgresql":  # ten days back: no daily partition, the default
        assert await _rows_in(live_database, "ts_num_default") == 350


async def test_default_policy_applies_without_a_row(live_database: Database) -> None:
    now = _now()
    org_id, device_id = await _org(live_database)
    await _write(live_database, org_id, device_id, [now - 100 * DAY_MS, now - 80 * DAY_MS, now])
    await run_retention(live_database.engine, defaults=DEFAULTS, now_ms=now)
    assert await _count(live_database, org_id) == 2


async def test_rollup_retention_is_separate_from_raw(live_database: Database) -> None:
    now = _now()
    org_id, device_id = await _org(live_database, Policy(10, 20, 30))
    keeper, keeper_dev = await _org(live_database, Policy(0, 0, 0))
    stamps = [now - days * DAY_MS for days in (35, 25, 15, 5)]
    await _write(live_database, org_id, device_id, stamps)
    await _write(live_database, keeper, keeper_dev, stamps)

    await run_retention(live_database.engine, defaults=DEFAULTS, now_ms=now)

    counts = [await _count(live_database, org_id, t) for t in (NUM, ROLLUP_1M, ROLLUP_1H)]
    assert counts == [1, 2, 3]  # raw: 5 days; 1m: 15 and 5; 1h: 25, 15 and 5
    kept = [await _count(live_database, keeper, t) for t in (NUM, ROLLUP_1M, ROLLUP_1H)]
    assert kept == [4, 4, 4]


@PG_ONLY
async def test_a_second_runner_skips_while_one_holds_the_lock(live_database: Database) -> None:
    async with live_database.engine.connect() as holder:
        await holder.exec_driver_sql("SELECT pg_advisory_lock($1)", (RUNNER_LOCK_KEY,))
        report = await run_retention(live_database.engine, defaults=DEFAULTS)
        await holder.exec_driver_sql("SELECT pg_advisory_unlock($1)", (RUNNER_LOCK_KEY,))
    assert report.skipped
    assert not (await run_retention(live_database.engine, defaults=DEFAULTS)).skipped


URL = "/api/v1/telemetry/retention"


async def test_policy_api_defaults_update_and_audit(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.headers(Role.ADMIN)
    first = await client.get(URL, headers=admin)
    assert first.status_code == 200
    assert first.json() | {"updated_at": None} == {
        "raw_days": 90,
        "rollup_1m_days": 365,
        "rollup_1h_days": 0,
        "requires_archive": False,
        "is_default": True,
        "updated_at": None,
    }
    body = {"raw_days": 30, "rollup_1m_days": 180, "rollup_1h_days": 0}
    put = await client.put(URL, headers=admin, json=body)
    assert put.status_code == 200, put.text
    assert (await client.get(URL, headers=admin)).json() | {"updated_at": None} == body | {
        "requires_archive": False,
        "is_default": False,
        "updated_at": None,
    }
    other = await client.get(URL, headers=other_tenant.headers(Role.ADMIN))
    assert other.json()["is_default"] is True
    assert other.json()["raw_days"] == 90
    audit = await client.get(
        "/api/v1/audit", headers=admin, params={"action": "telemetry.retention.update"}
    )
    [event] = audit.json()["items"]
    assert event["target_id"] == str(tenant.org_id)
    assert event["details"]["before"]["raw_days"] == 90
    assert event["details"]["after"] == body | {"requires_archive": False}


async def test_policy_api_needs_an_admin(client: httpx.AsyncClient, tenant: Tenant) -> None:
    body = {"raw_days": 30, "rollup_1m_days": 180, "rollup_1h_days": 0}
    for role in (Role.VIEWER, Role.OPERATOR, Role.MANAGER):
        assert (await client.get(URL, headers=tenant.headers(role))).status_code == 403
        assert (await client.put(URL, headers=tenant.headers(role), json=body)).status_code == 403
    assert (await client.get(URL)).status_code == 401
    assert (await client.get(URL, headers=tenant.headers())).json()["is_default"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"raw_days": -1, "rollup_1m_days": 10, "rollup_1h_days": 10}, "body.raw_days"),
        ({"raw_days": 1, "rollup_1m_days": 10, "rollup_1h_days": 99_999}, "body.rollup_1h_days"),
        ({"raw_days": 30, "rollup_1m_days": 10, "rollup_1h_days": 0}, "rollup_1m_days"),
        ({"raw_days": 0, "rollup_1m_days": 365, "rollup_1h_days": 0}, "rollup_1m_days"),
        ({"raw_days": 30, "rollup_1m_days": 0, "rollup_1h_days": 400}, "rollup_1h_days"),
        ({"raw_days": 30, "rollup_1m_days": 60, "rollup_1h_days": 45}, "rollup_1h_days"),
    ],
)
async def test_policy_api_validation_names_the_field(
    client: httpx.AsyncClient, tenant: Tenant, body: dict[str, int], field: str
) -> None:
    response = await client.put(URL, headers=tenant.headers(), json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    if field.startswith("body."):
        assert [e["field"] for e in error["details"]["errors"]] == [field]
    else:
        assert error["code"] == "RETENTION_ORDER"
        assert error["details"]["field"] == field
        assert field in error["message"]
    assert (await client.get(URL, headers=tenant.headers())).json()["is_default"] is True


async def test_forever_after_a_number_is_accepted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    body = {"raw_days": 30, "rollup_1m_days": 0, "rollup_1h_days": 0}
    response = await client.put(URL, headers=tenant.headers(), json=body)
    assert response.status_code == 200
    assert response.json()["rollup_1m_days"] == 0
