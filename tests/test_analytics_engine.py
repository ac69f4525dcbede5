"""The analytics engine on real ingest (HTTP, the pipeline, SQLite and PostgreSQL): findings,
health, wear estimates, proposals, the live channel, and state that survives a restart."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import func, select, update

from fleetcore.analytics.host import InlineRunner, ProcessRunner
from fleetcore.analytics.models import (
    AnalyticsFinding,
    AnalyticsSeries,
    DeviceHealth,
    Recommendation,
)
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.devices.models import DeviceProfile
from fleetcore.live.hub import Subscriber
from tests.conftest import client_for, running_app
from tests.support.analytics import (
    MIN,
    T0,
    judged,
    noise,
    send_series,
    watched_profile,
)
from tests.support.devices import new_device
from tests.support.holds import first_read_held
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until

VIB: dict[str, Any] = {"keys": {"vib": {}}}


async def _findings(database: Database, device_id: str) -> list[AnalyticsFinding]:
    async with database.session() as session:
        rows = await session.scalars(
            select(AnalyticsFinding)
            .where(AnalyticsFinding.device_id == uuid.UUID(device_id))
            .order_by(AnalyticsFinding.ts)
        )
        return list(rows.all())


async def _recommendations(database: Database, device_id: str) -> list[Recommendation]:
    async with database.session() as session:
        rows = await session.scalars(
            select(Recommendation)
            .where(Recommendation.device_id == uuid.UUID(device_id))
            .order_by(Recommendation.created_at)
        )
        return list(rows.all())


async def _health(database: Database, device_id: str) -> DeviceHealth | None:
    async with database.session() as session:
        return await session.get(DeviceHealth, uuid.UUID(device_id))


async def test_a_spike_is_found_explained_and_lowers_health(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    profile = await watched_profile(live_client, live_tenant, live_database, VIB)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    values = noise(1, 300)
    values[200] = 30.0  # one reading far off, the next back at the level
    subscriber = Subscriber(live_tenant.org_id)
    live_app.state.live.subscribe(subscriber, "analytics", None)
    await send_series(live_client, token, "vib", values)
    await judged(live_app)
    [spike] = await _findings(live_database, device_id)
    assert spike.method == "spike"
    assert spike.key == "vib"
    assert spike.score > spike.threshold
    assert spike.expected_low is not None
    assert spike.expected_high is not None
    assert spike.expected_low < 10 < spike.expected_high
    assert [T0 + 200 * MIN, 30.0] in spike.evidence
    assert spike.explanation.startswith("vib jumped for a single reading")
    health = await _health(live_database, device_id)
    assert health is not None
    assert 0 < health.score < 1
    assert health.contributors[0]["key"] == "vib"
    assert "spike" in health.contributors[0]["reason"]
    assert subscriber.pending == 1
    message = orjson.loads(await subscriber.next())
    assert message["type"] == "finding"
    assert message["finding"]["method"] == "spike"
    # The score is a reading rules can alert on, and a series charts can show.
    latest = await live_client.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=live_tenant.headers(Role.VIEWER)
    )
    assert latest.status_code == 200, latest.text
    assert latest.json()["values"]["analytics.health"]["value"] == round(health.score, 4)
    # A clean machine on the same profile: nothing found, full health.
    clean_id, clean_token = await new_device(live_client, live_tenant, profile_id=profile)
    await send_series(live_client, clean_token, "vib", noise(2, 300))
    await judged(live_app)
    assert await _findings(live_database, clean_id) == []


async def test_a_batch_committed_while_the_engine_loads_the_device_is_judged(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    """Ingest never waits for analytics: the next batch may commit while the engine still
    reads the device's settings and recent findings (its first batch, or a profile edit).
    That batch is judged, not skipped as a device that watches nothing."""
    profile = await watched_profile(live_client, live_tenant, live_database, VIB)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    values = noise(8, 300)
    values[250] = 30.0  # a spike in the batch committed during the read
    pipeline = live_app.state.pipeline
    async with first_read_held(live_database, "analytics_findings") as hold:
        await send_series(live_client, token, "vib", values[:200])
        await wait_until(hold.reached.is_set)  # the engine reads the device's findings
        await send_series(live_client, token, "vib", values[200:], start=T0 + 200 * MIN)
        await wait_until(lambda: pipeline.pending == 0)  # its after-commit handlers ran
        hold.release.set()
    await judged(live_app)
    assert live_app.state.analytics.readings == 300
    [spike] = await _findings(live_database, device_id)
    assert spike.method == "spike"
    assert [T0 + 250 * MIN, 30.0] in spike.evidence


async def test_range_violations_propose_once_with_params_from_current_values(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    analytics = {
        "keys": {"temp": {}},
        "recommend": [
            {
                "on": "range",
                "key": "temp",
                "kind": "reduce_speed",
                "title": "Reduce speed: {key} too hot",
                "method": "set_speed",
                "params": {"rpm": {"from_key": "rpm", "times": 0.9}},
            }
        ],
    }
    keys = [{"key": "temp", "type": "number", "max": 80}, {"key": "rpm", "type": "number"}]
    profile = await watched_profile(live_client, live_tenant, live_database, analytics, keys)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    values = noise(3, 100, level=60, sd=1)
    values[50:55] = [85.0] * 5  # out of range, back, then out again below
    values[70:72] = [90.0] * 2
    await send_series(live_client, token, "temp", values, extra={"rpm": 1500.0})
    await judged(live_app)
    ranges = [f for f in await _findings(live_database, device_id) if f.method == "range"]
    assert [f.ts for f in ranges] == [T0 + 50 * MIN, T0 + 70 * MIN]
    assert all(f.severity == "critical" for f in ranges)
    [proposal] = await _recommendations(live_database, device_id)  # one while one waits
    assert proposal.status == "proposed"
    assert proposal.kind == "reduce_speed"
    assert proposal.title == "Reduce speed: temp too hot"
    assert proposal.method == "set_speed"
    assert proposal.params == {"rpm": 1350.0}
    assert proposal.topic == "range:temp:reduce_speed"
    assert proposal.evidence["finding"]["method"] == "range"
    assert proposal.evidence["finding_id"] == ranges[0].id
    assert "outside the profile's range" in proposal.rationale
    assert proposal.expires_at > proposal.created_at


async def test_a_degrading_machine_gets_an_interval_and_an_inspection(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    analytics = {"keys": {"vib": {"wear": {"threshold": 7.1, "warn_within_days": 30}}}}
    profile = await watched_profile(live_client, live_tenant, live_database, analytics)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    step = 10 * MIN  # six readings an hour for 130 hours, rising toward 7.1 over ~10 days
    count = 130 * 6
    jitter = noise(4, count, level=0.0, sd=0.05)
    values = [2.0 + 5.1 * i / (240 * 6) + jitter[i] for i in range(count)]
    await send_series(live_client, token, "vib", values, step=step)
    await judged(live_app)
    health = await _health(live_database, device_id)
    assert health is not None
    wear = health.wear["vib"]
    assert wear["status"] == "ok"
    assert wear["threshold"] == 7.1
    assert wear["low_ms"] <= wear["eta_ms"] <= wear["high_ms"]
    fail_ms = T0 + 240 * 3_600_000
    assert wear["low_ms"] - 2 * 86_400_000 < fail_ms < wear["high_ms"] + 2 * 86_400_000
    assert any(c["source"] == "wear" for c in health.contributors)
    [inspection] = await _recommendations(live_database, device_id)
    assert inspection.kind == "inspect"
    assert inspection.method is None
    assert inspection.params is None
    assert inspection.topic == "wear:vib:inspect"
    assert inspection.evidence["wear"]["status"] == "ok"


async def test_too_little_history_says_so(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    analytics = {"keys": {"vib": {"wear": {"threshold": 7.1}}}}
    profile = await watched_profile(live_client, live_tenant, live_database, analytics)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    await send_series(live_client, token, "vib", noise(5, 300, level=2.0), step=10 * MIN)
    await judged(live_app)
    health = await _health(live_database, device_id)
    assert health is not None
    assert health.wear["vib"]["status"] == "not_enough_data"
    assert health.wear["vib"]["eta_ms"] is None
    assert health.wear["vib"]["points"] < 100
    assert await _recommendations(live_database, device_id) == []


async def test_unwatched_devices_and_keys_are_not_judged(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    plain, plain_token = await new_device(live_client, live_tenant)
    profile = await watched_profile(live_client, live_tenant, live_database, VIB)
    watched, token = await new_device(live_client, live_tenant, profile_id=profile)
    spiky = noise(6, 200)
    spiky[150] = 50.0
    await send_series(live_client, plain_token, "vib", spiky)
    await send_series(live_client, token, "other", spiky)  # not a watched key
    await send_series(live_client, token, "vib", ["x"] * 3)  # type: ignore[list-item]
    await judged(live_app)
    async with live_database.session() as session:
        assert await session.scalar(select(func.count()).select_from(AnalyticsFinding)) == 0
        assert await session.scalar(select(func.count()).select_from(DeviceHealth)) == 0
    assert live_app.state.analytics.readings == 0
    async with live_database.session() as session:
        series = (await session.scalars(select(AnalyticsSeries))).all()
    assert [(str(s.device_id), s.key) for s in series] in ([], [(watched, "vib")])
    assert all(s.detector["n"] == 0 for s in series)
    assert plain != watched


async def test_state_survives_a_restart_and_the_gap_is_replayed_once(
    live_database: Database, tmp_path: Path
) -> None:
    """Readings stored while analytics was not running (a crash between commit and flush,
    or analytics switched off) are judged from the telemetry tables at the next sight."""
    values = noise(7, 400)
    values[250] = 40.0  # a spike in the gap
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        org = await make_tenant(http, live_database)
        profile = await watched_profile(http, org, live_database, VIB)
        device_id, token = await new_device(http, org, profile_id=profile)
        await send_series(http, token, "vib", values[:200])
        await judged(app)
    quiet = running_app(live_database, tmp_path, analytics_enabled=False)
    async with quiet as app, client_for(app) as http:
        await send_series(http, token, "vib", values[200:300], start=T0 + 200 * MIN)
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        await send_series(http, token, "vib", values[300:], start=T0 + 300 * MIN)
        await judged(app)
        assert app.state.analytics.readings == 200  # 100 replayed, 100 new
    [spike] = await _findings(live_database, device_id)
    assert (spike.method, spike.ts) == ("spike", T0 + 251 * MIN)  # confirmed by the next one
    async with live_database.session() as session:
        series = await session.get(AnalyticsSeries, (uuid.UUID(device_id), "vib"))
        assert series is not None
        assert series.last_ts == T0 + 399 * MIN
        assert series.detector["n"] == 400  # every reading judged exactly once
    # Once more, with nothing missed: nothing is judged twice.
    async with running_app(live_database, tmp_path) as app, client_for(app) as http:
        await send_series(http, token, "vib", values[:10])  # all duplicates
        await send_series(http, token, "vib", [10.0], start=T0 + 400 * MIN)
        await judged(app)
        assert app.state.analytics.readings == 1
    assert len(await _findings(live_database, device_id)) == 1


async def test_a_changed_profile_takes_effect_and_bad_settings_watch_nothing(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    bad: dict[str, Any] = {"keys": {"vib": {"sensitivity": {"no_such_setting": 1}}}}
    profile = await watched_profile(live_client, live_tenant, live_database, bad)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    values = noise(8, 200)
    values[150] = 50.0
    await send_series(live_client, token, "vib", values)
    await judged(live_app)
    assert await _findings(live_database, device_id) == []
    async with live_database.session() as session:
        await session.execute(
            update(DeviceProfile)
            .where(DeviceProfile.id == uuid.UUID(profile))
            .values(analytics=VIB)
        )
        await session.commit()
    live_app.state.analytics.forget_settings()
    await send_series(live_client, token, "vib", values, start=T0 + 200 * MIN)
    await judged(live_app)
    [spike] = await _findings(live_database, device_id)
    assert spike.ts == T0 + 351 * MIN


async def test_the_detectors_process_dying_loses_nothing(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    """The child process judging the readings is killed: the next batch starts a new one,
    which reloads the series and replays what the dead one had not finished."""
    engine = live_app.state.analytics
    assert isinstance(engine.runner, ProcessRunner)
    profile = await watched_profile(live_client, live_tenant, live_database, VIB)
    device_id, token = await new_device(live_client, live_tenant, profile_id=profile)
    values = noise(9, 400)
    values[300] = 40.0
    await send_series(live_client, token, "vib", values[:200])
    await judged(live_app)
    first = engine.runner.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await send_series(live_client, token, "vib", values[200:320], start=T0 + 200 * MIN)
    await judged(live_app)  # this batch found the host dead: it is judged again below
    await send_series(live_client, token, "vib", values[320:], start=T0 + 320 * MIN)
    await judged(live_app)
    assert engine.runner.pid not in (None, first)
    [spike] = await _findings(live_database, device_id)
    assert (spike.method, spike.ts) == ("spike", T0 + 301 * MIN)
    await engine.stop()  # saves the state
    async with live_database.session() as session:
        series = await session.get(AnalyticsSeries, (uuid.UUID(device_id), "vib"))
        assert series is not None
        assert series.detector["n"] == 400  # judged from the first reading, once each


async def test_the_detectors_may_run_in_the_ingest_process(
    live_database: Database, tmp_path: Path
) -> None:
    async with (
        running_app(live_database, tmp_path, analytics_process=False) as app,
        client_for(app) as http,
    ):
        assert isinstance(app.state.analytics.runner, InlineRunner)
        org = await make_tenant(http, live_database)
        profile = await watched_profile(http, org, live_database, VIB)
        device_id, token = await new_device(http, org, profile_id=profile)
        values = noise(10, 300)
        values[250] = 35.0
        await send_series(http, token, "vib", values)
        await judged(app)
    [spike] = await _findings(live_database, device_id)
    assert (spike.method, spike.ts) == ("spike", T0 + 251 * MIN)
