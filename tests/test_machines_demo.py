"""The industrial machines of `make run` (simulator.machines_demo): their history through the
real ingest route and the analytics engine, on both databases, and what /analytics then shows:
a motor wearing out with its interval, a recommendation waiting, findings of several kinds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute

from fleetcore.alerts.models import Alert
from fleetcore.analytics.config import AnalyticsConfig
from fleetcore.analytics.engine import HEALTH_KEY
from fleetcore.analytics.models import AnalyticsFinding, DeviceHealth, Recommendation
from fleetcore.commands.limits import check_command, schemas_problem
from fleetcore.db import Database
from fleetcore.devices.models import DeviceProfile
from fleetcore.safety.inputs import SafetyContext, SafetyRequest
from fleetcore.safety.policy import SafetyPolicy
from fleetcore.safety.validator import validate
from fleetcore.simulator.machines_demo import (
    DEGRADING,
    HISTORY_MS,
    STEP_MS,
    DemoMachines,
    ensure_demo_machines,
    fill_demo_machines,
    now_ms,
)
from fleetcore.simulator.motors import DAY_MS, HOUR_MS, ISO_10816_CLASS_II_LIMIT, Motor, Spike
from fleetcore.telemetry.models import VALUE_TABLES, Series, TelemetryKey
from fleetcore_protocol.telemetry import Kind
from tests.support.analytics import judged
from tests.support.rules import settled

ORG = "press-shop"
ROWS_PER_MACHINE = HISTORY_MS // STEP_MS  # 8 days at one reading every 10 minutes


async def _count(
    database: Database, device_id: InstrumentedAttribute[uuid.UUID], demo: DemoMachines
) -> int:
    """Rows whose `device_id` column names one of the machines."""
    ids = [m.device_id for m in demo.machines]
    async with database.session() as session:
        total = await session.scalar(select(func.count()).where(device_id.in_(ids)))
    return int(total or 0)


async def _readings(database: Database, demo: DemoMachines) -> int:
    """Numeric readings of the machines' own keys (not the engine's analytics.health)."""
    ids = [m.device_id for m in demo.machines]
    numbers = VALUE_TABLES[Kind.NUMBER]
    async with database.session() as session:
        total = await session.scalar(
            select(func.count())
            .select_from(numbers)
            .join(Series, Series.id == numbers.c.series_id)
            .join(TelemetryKey, TelemetryKey.id == Series.key_id)
            .where(Series.device_id.in_(ids), TelemetryKey.name != HEALTH_KEY)
        )
    return int(total or 0)


async def test_the_history_shows_a_motor_wearing_out_and_a_recommendation_waiting(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_database: Database
) -> None:
    now = now_ms()
    demo = await ensure_demo_machines(live_database, organization=ORG, now=now)
    await live_app.state.rules.reload()  # (make run makes the demo before the server starts)
    # A first start an hour ago sent the history up to then; this start fills the hour since.
    assert await fill_demo_machines(live_client, live_database, demo, now=now - HOUR_MS) == (
        4 * ROWS_PER_MACHINE
    )
    again = await ensure_demo_machines(live_database, organization=ORG, now=now + DAY_MS)
    assert [m.device_id for m in again.machines] == [m.device_id for m in demo.machines]
    assert again.degrading.motor == demo.degrading.motor  # anchored at the first start
    assert all(a.token != b.token for a, b in zip(again.machines, demo.machines, strict=True))
    assert await fill_demo_machines(live_client, live_database, again, now=now) == 4 * 6
    await judged(live_app)
    await settled(live_app)

    async with live_database.session() as session:
        # The degrading motor's health, a reading like any other, opened the demo's alert.
        alerts = (
            await session.scalars(
                select(Alert).where(Alert.organization_id == demo.organization_id)
            )
        ).all()
        assert [a.device_id for a in alerts] == [demo.degrading.device_id]
        assert alerts[0].severity == "major"
        profile = await session.get(DeviceProfile, demo.profile_id)
        assert profile is not None
        assert AnalyticsConfig.model_validate(profile.analytics).watching
        policy = SafetyPolicy.model_validate(profile.safety_policy)
        healths = {
            m.spec.serial: await session.get(DeviceHealth, m.device_id) for m in demo.machines
        }
        findings = (
            await session.scalars(
                select(AnalyticsFinding).where(
                    AnalyticsFinding.organization_id == demo.organization_id
                )
            )
        ).all()
        worn = demo.degrading
        proposed = {
            r.kind: r
            for r in await session.scalars(
                select(Recommendation).where(
                    Recommendation.device_id == worn.device_id,
                    Recommendation.status == "proposed",
                )
            )
        }

    # The worn motor: 7.1 mm/s plausible within the warning window (a few days), never a
    # bare point; the healthy ones not degrading.
    health = healths.pop(DEGRADING)
    assert health is not None
    wear = health.wear["vibration_rms"]
    assert wear["status"] == "ok"
    assert wear["threshold"] == ISO_10816_CLASS_II_LIMIT
    assert wear["now_ms"] < wear["low_ms"] <= wear["eta_ms"]
    assert wear["low_ms"] - wear["now_ms"] <= 14 * DAY_MS
    assert wear["high_ms"] is None or wear["high_ms"] >= wear["eta_ms"]
    assert any(c["key"] == "vibration_rms" and c["source"] == "wear" for c in health.contributors)
    for serial, other in healths.items():
        assert other is not None, serial
        assert other.wear["vibration_rms"]["status"] == "not_degrading", serial
        assert other.score > health.score, serial

    # Waiting for people: slow down by 10 % of its speed, and a bearing replacement.
    reduce = proposed["reduce_speed"]
    assert reduce.method == "set_speed"
    assert reduce.params == {"rpm": round(worn.spec.speed_rpm * 0.9, 6)}
    assert reduce.topic == "wear:vibration_rms:reduce_speed"
    assert reduce.evidence["wear"]["status"] == "ok"
    assert proposed["schedule_maintenance"].params == {"part": "bearing", "within_days": 3}
    # Sound for the safety gate: only the approval is missing.
    verdict = validate(
        policy,
        SafetyRequest(reduce.method, reduce.params, requested_by="analytics"),
        SafetyContext(now=datetime.now(UTC), values={"speed": worn.spec.speed_rpm}),
    )
    assert verdict.awaiting_approval, verdict.reasons
    # ... and for the profile's command allow-list, which checks every command.
    assert profile.command_limits["allowed"]
    assert schemas_problem(profile.command_limits["allowed"]) is None
    for proposal in proposed.values():
        assert proposal.method is not None
        check_command(profile.command_limits, proposal.method, proposal.params or {})

    # Findings of several methods: the jam's current spike, the frozen temperature sensor.
    by_device = {m.device_id: m.spec.serial for m in demo.machines}
    seen = {(by_device[f.device_id], f.key, f.method) for f in findings}
    assert ("MOT-0002", "current", "spike") in seen
    assert ("MOT-0003", "temperature", "stuck") in seen
    assert len({f.method for f in findings}) >= 2

    # Started again: nothing sent twice, nothing judged twice.
    counts = (
        await _readings(live_database, demo),
        await _count(live_database, AnalyticsFinding.device_id, demo),
        await _count(live_database, Recommendation.device_id, demo),
    )
    assert counts[0] == 4 * 4 * (ROWS_PER_MACHINE + 6)
    assert counts[1] >= 2
    assert counts[2] >= 2
    third = await ensure_demo_machines(live_database, organization=ORG)
    assert await fill_demo_machines(live_client, live_database, third, now=now) == 0
    await judged(live_app)
    assert counts == (
        await _readings(live_database, demo),
        await _count(live_database, AnalyticsFinding.device_id, demo),
        await _count(live_database, Recommendation.device_id, demo),
    )


def test_a_motor_reading_is_a_function_of_time() -> None:
    now = 1_795_300_000_000 - 1_795_300_000_000 % STEP_MS
    jam = Spike("current", now + STEP_MS, 30.0)
    motor = Motor(7, 1450, 26.0, 55.0, 2.2, fails_at_ms=now + 4 * DAY_MS, spikes=(jam,))
    assert motor.reading(now) == motor.reading(now)  # history and live agree
    assert motor.reading(now) != motor.reading(now + STEP_MS // 2)
    assert motor.reading(now + STEP_MS)["current"] - motor.reading(now)["current"] > 25
    assert motor.reading(now + 2 * STEP_MS)["current"] < motor.reading(now + STEP_MS)["current"]
    assert motor.vibration_level(now + 4 * DAY_MS) == pytest.approx(ISO_10816_CLASS_II_LIMIT)
    assert motor.vibration_level(now - 8 * DAY_MS) == 2.2  # before the wear began
    assert motor.vibration_level(now + 60 * DAY_MS) < 12  # capped in zone D
