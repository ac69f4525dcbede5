"""Plate reads over MQTT (stored, or refused as a dead letter) and two reads of one plate
committed at once: one visit, however the transactions interleave."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import httpx
import orjson
from fastapi import FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.models import Alert
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.events.codec import EventIn, parse_events
from fleetcore.events.ports import AfterCommit, EventSource, StoredEvent
from fleetcore.events.service import record_events
from fleetcore.plates.hook import PlateHook
from fleetcore.plates.models import Plate, PlateRead, PlateVisit
from tests.support.devices import port_of
from tests.support.mqtt_raw import RawClient
from tests.support.plates import camera, plate_read, watchlist
from tests.support.tenants import Tenant
from tests.support.wait import wait_until


async def test_plate_reads_over_mqtt_and_a_bad_one_is_a_dead_letter(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    device_id, token = await camera(http, org, "mqtt cam")
    wl = await watchlist(http, org, "mqtt list", "MQ 77")
    client = await RawClient.connected(port_of(mqtt_app), "cam", username=token)
    topic = f"devices/{device_id}/events"
    await client.publish(topic, orjson.dumps(plate_read("mq-77", 0.93, camera="c1")), qos=1)
    await client.publish(topic, orjson.dumps(plate_read("MQ 78", 7.0)), qos=1)

    async def stored() -> bool:
        response = await http.get(
            "/api/v1/plates/reads", params={"q": "MQ77"}, headers=org.headers(Role.VIEWER)
        )
        return [r["plate_norm"] for r in response.json()["items"]] == ["MQ77"]

    await wait_until(stored, within=10)

    async def dead() -> bool:
        response = await http.get(
            "/api/v1/dead-letters",
            params={"device_id": device_id, "reason": "invalid_plate_read"},
            headers=org.headers(),
        )
        return len(response.json()["items"]) == 1

    await wait_until(dead, within=10)
    alerts = await http.get(
        "/api/v1/alerts", params={"rule_id": wl["rule_id"]}, headers=org.headers(Role.VIEWER)
    )
    [alert] = alerts.json()["items"]
    assert alert["details"]["values"]["plate_norm"] == "MQ77"
    assert alert["details"]["values"]["camera"] == "c1"
    # MQ78 was refused whole: no read, no event.
    wrong = await http.get(
        "/api/v1/plates/reads",
        params={"q": "MQ78", "exact": "true"},
        headers=org.headers(Role.VIEWER),
    )
    assert wrong.json()["items"] == []


class _Gate:
    """A hook after the plates hook that holds its transaction open until released."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def wants(self, event: EventIn) -> bool:
        return True

    def check(self, event: EventIn, index: int | None) -> None:
        return None

    async def stored(
        self, session: AsyncSession, device: EventSource, events: Sequence[StoredEvent]
    ) -> AfterCommit | None:
        self.reached.set()
        await self.release.wait()
        return None


async def _waiting_on_a_lock(database: Database) -> bool:
    async with database.session() as session:
        waiting = await session.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        )
    return bool(waiting)


async def test_two_reads_of_one_plate_at_once_make_one_visit(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    backend: str,
) -> None:
    device_id, _ = await camera(live_client, live_tenant)
    wl = await watchlist(live_client, live_tenant, "race", "RACE1")
    device = IngestDevice(id=uuid.UUID(device_id), organization_id=live_tenant.org_id, profile=None)
    hook = PlateHook(live_app.state.alert_bus, visit_window_s=60)
    events = parse_events(orjson.dumps(plate_read("RACE 1", 0.9)), now_ms=1_795_300_000_000)
    again = parse_events(orjson.dumps(plate_read("race-1", 0.95)), now_ms=1_795_300_001_000)

    async def store(batch: list[EventIn], hooks: list[object]) -> int:
        async with live_database.session(write=True) as session:
            return await record_events(session, device, batch, hooks)  # type: ignore[arg-type]

    # Seen an hour before: its plates row exists, so only a lock on it (not a pending
    # insert) can make the second transaction wait.
    earlier = parse_events(orjson.dumps(plate_read("RACE1", 0.5)), now_ms=1_795_296_400_000)
    assert await store(earlier, [hook]) == 1

    if backend == "postgresql":
        # The first holds its transaction open after writing its read; the second must wait
        # for it (the plates row lock), then extend its visit.
        gate = _Gate()
        first = asyncio.create_task(store(events, [hook, gate]))
        await asyncio.wait_for(gate.reached.wait(), 10)
        second = asyncio.create_task(store(again, [hook]))
        await wait_until(lambda: _waiting_on_a_lock(live_database), within=10)
        assert not second.done()
        gate.release.set()
        assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [1, 1]
    else:  # one writer at a time: both go through, one after the other
        assert await asyncio.gather(store(events, [hook]), store(again, [hook])) == [1, 1]

    async with live_database.session() as session:
        visits = (await session.scalars(select(PlateVisit).order_by(PlateVisit.first_ts))).all()
        plate = await session.scalar(select(Plate))
        reads = await session.scalar(select(func.count()).select_from(PlateRead))
        alerts = await session.scalar(select(func.count()).select_from(Alert))
    assert [(v.plate_key, v.reads, v.best_confidence) for v in visits] == [
        ("RACE1", 1, 0.5),
        ("RACE1", 2, 0.95),
    ]
    assert plate is not None
    assert (plate.reads, plate.visits) == (3, 2)
    assert reads == 3
    assert alerts == 1, wl
