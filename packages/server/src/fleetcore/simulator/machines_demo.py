"""The industrial side of `make run`: four motors watched by analytics, one of them wearing out.

The profile and the machines are made before the server starts (fresh device tokens each
start); their history is sent once the server answers (DemoMachinesRun), through the
device ingest route as the machines themselves would, with timestamps in the past: 8 days
at a reading every 10 minutes, ending now. Analytics judges it as it is committed, so by
the time the pages are opened Press line motor 4 has a wear estimate ("7.1 mm/s in about 4
days", with its interval) and recommendations waiting for approval, and the others have a
few findings of their own (a jam's current spike, a temperature sensor that froze).

Once per data directory: a machine that already has readings is filled only from its last
one (a restart fills the gap, up to 8 days, and never sends a reading twice). The motors'
signals are a function of time (simulator/motors.py) anchored at the first start (kept in
each device's properties), so later starts carry on the same story. Then, with `live`, the
machines report every few seconds until the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.analytics.config import AnalyticsConfig
from fleetcore.db import Database
from fleetcore.rules.models import Rule
from fleetcore.rules.schemas import RuleIn
from fleetcore.safety.policy import SafetyPolicy
from fleetcore.simulator.motor_profile import (
    ANALYTICS,
    COMMAND_LIMITS,
    DESCRIPTION,
    PROFILE,
    SAFETY_POLICY,
)
from fleetcore.simulator.motors import DAY_MS, HOUR_MS, KEYS, Motor, Spike, Stuck
from fleetcore.simulator.provision import (
    ensure_devices,
    ensure_organization,
    ensure_profile,
    record_provisioning,
)
from fleetcore.telemetry.queries import latest_values

LABEL = "simulated"
ANCHOR = "demo_anchor_ms"  # the device property the motors' story is anchored at
HISTORY_MS = 8 * DAY_MS
STEP_MS = 10 * 60_000  # the history's cadence
PAGE = 500  # rows per request: 2,000 readings, well within the ingest limits
LIVE_EVERY_S = 5.0  # live: each machine reports this often
FAILS_IN_MS = 4 * DAY_MS  # the degrading motor reaches 7.1 mm/s this long after the anchor
TELEMETRY_PATH = "/api/v1/devices/me/telemetry"
DEGRADING = "MOT-0004"
# What happens to a motor: nothing, a jam (a current spike), a temperature sensor that froze
# for a while, or wear (its vibration rising toward 7.1 mm/s).
Story = Literal["healthy", "jam", "frozen", "wearing"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """One demo motor: its name, serial, levels and what happens to it."""

    name: str
    serial: str
    seed: int
    speed_rpm: float
    current_a: float
    temperature_c: float
    vibration_mm_s: float
    story: Story = "healthy"

    def motor(self, anchor_ms: int) -> Motor:
        """Its signal model, the episodes placed relative to the anchor (the first start)."""
        spikes: tuple[Spike, ...] = ()
        stuck: tuple[Stuck, ...] = ()
        fails_at = None
        if self.story == "jam":
            # Two days before, at 13:30 UTC: the hour the shift's load cycle crosses its own
            # 10-hour median, so the reading after the jam is back "at the level".
            day = anchor_ms - 2 * DAY_MS
            spikes = (Spike("current", day - day % DAY_MS + 13 * HOUR_MS + HOUR_MS // 2, 30.0),)
        elif self.story == "frozen":
            since = anchor_ms - 3 * DAY_MS - 2 * HOUR_MS
            stuck = (Stuck("temperature", since - since % STEP_MS, since + 5 * HOUR_MS),)
        elif self.story == "wearing":
            fails_at = anchor_ms + FAILS_IN_MS
        return Motor(
            seed=self.seed,
            speed_rpm=self.speed_rpm,
            current_a=self.current_a,
            temperature_c=self.temperature_c,
            vibration_mm_s=self.vibration_mm_s,
            fails_at_ms=fails_at,
            spikes=spikes,
            stuck=stuck,
        )


MACHINES = (
    MachineSpec("Press line motor 1", "MOT-0001", 11, 1480, 22.0, 52.0, 2.1),
    MachineSpec("Press line motor 2", "MOT-0002", 12, 1475, 24.0, 54.0, 2.4, story="jam"),
    MachineSpec("Press line motor 3", "MOT-0003", 13, 1490, 21.0, 50.0, 1.9, story="frozen"),
    MachineSpec("Press line motor 4", DEGRADING, 14, 1450, 26.0, 55.0, 2.2, story="wearing"),
)


@dataclass(frozen=True, slots=True)
class DemoMachine:
    """A provisioned motor: its spec, device, token (in memory only) and signal model."""

    spec: MachineSpec
    device_id: uuid.UUID
    token: str
    motor: Motor


@dataclass(frozen=True, slots=True)
class DemoMachines:
    """The demo's motors and their profile."""

    organization_id: uuid.UUID
    profile_id: uuid.UUID
    machines: list[DemoMachine]

    @property
    def degrading(self) -> DemoMachine:
        """The motor wearing out."""
        return next(m for m in self.machines if m.spec.serial == DEGRADING)


@dataclass(slots=True)
class MachineStats:
    """Readings sent to the platform (rows of every key at one time) and what it said."""

    history_rows: int = 0
    live_rows: int = 0
    refused: int = 0
    last_error: str = ""


def now_ms() -> int:
    """The wall clock, epoch milliseconds."""
    return int(time.time() * 1000)


async def ensure_demo_machines(
    database: Database, *, organization: str, now: int | None = None
) -> DemoMachines:
    """The profile and the four motors (made once, fresh tokens on every call)."""
    AnalyticsConfig.model_validate(ANALYTICS)  # the demo's own settings: wrong is a bug
    SafetyPolicy.model_validate(SAFETY_POLICY)
    anchor = now_ms() if now is None else now
    async with database.session(write=True) as session:  # the engine may be writing too
        org = await ensure_organization(session, organization)
        profile, _ = await ensure_profile(
            session,
            org.id,
            PROFILE,
            description=DESCRIPTION,
            telemetry_keys=KEYS,
            out_of_range="flag",  # an out-of-range reading is what analytics is for
            command_limits=COMMAND_LIMITS,
            analytics=ANALYTICS,
            safety_policy=SAFETY_POLICY,
        )
        await _ensure_health_rule(session, org.id, profile.id)
        made = await ensure_devices(
            session,
            org.id,
            [s.serial for s in MACHINES],
            profile_id=profile.id,
            label=LABEL,
            properties=lambda _index: {"simulated": "industrial motor", ANCHOR: anchor},
            names=[s.name for s in MACHINES],
        )
        machines = []
        for spec, one in zip(MACHINES, made, strict=True):
            # A motor made before keeps its anchor, so its story continues where it was.
            stored = one.device.properties.get(ANCHOR)
            motor = spec.motor(stored if isinstance(stored, int) else anchor)
            machines.append(DemoMachine(spec, one.device.id, one.token, motor))
        record_provisioning(
            session,
            made,
            action="simulator.provision_machines",
            organization_id=org.id,
            target_type="device_profile",
            target_id=profile.id,
        )
        await session.commit()
        return DemoMachines(org.id, profile.id, machines)


# Findings reach alerts through the rules: the engine writes each device's health as the
# telemetry key analytics.health, and this rule alerts when a motor's health drops.
HEALTH_RULE: dict[str, Any] = {
    "name": "Motor health low",
    "description": "Demo rule: advisory analytics scores a motor below 0.6.",
    "condition": {"key": "analytics.health", "op": "<", "value": 0.6},
    "clear_condition": {"key": "analytics.health", "op": ">=", "value": 0.7},
    "severity": "major",
}


async def _ensure_health_rule(
    session: AsyncSession, organization_id: uuid.UUID, profile_id: uuid.UUID
) -> None:
    """The health rule on the motors' profile, made once (by name)."""
    taken = await session.scalar(
        select(Rule.id).where(
            Rule.organization_id == organization_id, Rule.name == HEALTH_RULE["name"]
        )
    )
    if taken is not None:
        return
    values = RuleIn.model_validate({**HEALTH_RULE, "profile_id": profile_id}).model_dump(
        mode="json", exclude_none=True
    )
    values["profile_id"] = profile_id
    session.add(Rule(organization_id=organization_id, **values))


async def fill_demo_machines(
    http: httpx.AsyncClient,
    database: Database,
    demo: DemoMachines,
    *,
    now: int,
    stop: asyncio.Event | None = None,
) -> int:
    """Send each machine's history up to `now` (epoch ms) from its last reading (8 days
    back when it has none) through the ingest route; the rows sent. `stop` cuts it short:
    the next fill carries on from there."""
    last = await _last_readings(database, demo)
    end = now - now % STEP_MS
    sent = 0
    for machine in demo.machines:
        first = end - HISTORY_MS + STEP_MS
        if (previous := last.get(machine.device_id)) is not None:
            first = max(first, previous - previous % STEP_MS + STEP_MS)
        times = range(first, end + 1, STEP_MS)
        for start in range(0, len(times), PAGE):
            if stop is not None and stop.is_set():
                return sent
            body = [
                {"ts": ts, "values": machine.motor.reading(ts)}
                for ts in times[start : start + PAGE]
            ]
            await _post(http, machine, body)
            sent += len(body)
    return sent


async def _last_readings(database: Database, demo: DemoMachines) -> dict[uuid.UUID, int]:
    """Each machine's latest reading time (epoch ms), for those that have one."""
    keys = {str(k["key"]) for k in KEYS}
    async with database.session() as session:
        latest = await latest_values(
            session, demo.organization_id, [m.device_id for m in demo.machines]
        )
    found = {}
    for device_id, values in latest.items():
        times = [value.ts for key, value in values.items() if key in keys]
        if times:
            found[device_id] = max(times)
    return found


async def _post(
    http: httpx.AsyncClient, machine: DemoMachine, body: list[dict[str, object]]
) -> None:
    """One request of readings; raises if the platform did not store them."""
    response = await http.post(TELEMETRY_PATH, headers={"X-Device-Token": machine.token}, json=body)
    if response.status_code != 200:
        raise RuntimeError(
            f"{machine.spec.name}: the platform answered {response.status_code}: "
            f"{response.text[:200]}"
        )


class DemoMachinesRun:
    """`serve --demo`'s motors once the server answers: the history, then (with `live`)
    a reading from each every few seconds until `stop` is set."""

    def __init__(
        self,
        demo: DemoMachines,
        *,
        open_database: Callable[[], Database],
        http_url: str,
        live: bool,
    ) -> None:
        self.demo, self.open_database = demo, open_database
        self.http_url, self.live = http_url, live
        self.stop = asyncio.Event()
        self.stats = MachineStats()

    async def run(self) -> None:
        """Fill, then report until stopped; logs what was sent."""
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as http:
            database = self.open_database()
            try:
                self.stats.history_rows = await fill_demo_machines(
                    http, database, self.demo, now=now_ms(), stop=self.stop
                )
            except (httpx.HTTPError, RuntimeError):
                if not self.stop.is_set():
                    raise
                return  # the server stopped meanwhile: the next start carries on
            finally:
                await database.close()
            log.info("machines demo ready", history_rows=self.stats.history_rows)
            if self.live:
                await self._report(http, self.demo.machines)
        log.info(
            "machines simulator stopped",
            live_rows=self.stats.live_rows,
            refused=self.stats.refused,
            last_error=self.stats.last_error,
        )

    async def _report(self, http: httpx.AsyncClient, machines: Sequence[DemoMachine]) -> None:
        """Round robin: one machine's readings every LIVE_EVERY_S / len(machines) seconds."""
        pause = LIVE_EVERY_S / len(machines)
        turn = 0
        while not self.stop.is_set():
            machine = machines[turn % len(machines)]
            turn += 1
            ts = now_ms()
            try:
                await _post(http, machine, [{"ts": ts, "values": machine.motor.reading(ts)}])
                self.stats.live_rows += 1
            except (httpx.HTTPError, RuntimeError) as error:  # a busy or stopping server
                self.stats.refused += 1
                self.stats.last_error = str(error)[:200]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), pause)
