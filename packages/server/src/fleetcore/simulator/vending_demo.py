"""The vending side of `make run`: a fleet with 30 days of audits, a driver, today's order.

The fleet and the driver are made before the server starts; the rest once it answers
(DemoVendingRun), as accounting a month of audits takes seconds. Done once per data
directory (a fleet that has audits carries on from its last ones): the machines'
history is simulated from 30 days ago to now and each read goes through the platform's
ingest service, as an upload would, with its read time in the past. A few reads are made
odd on purpose so every part of /vending has something to show: a damaged audit waiting
for a manager (machine 1, yesterday), a duplicate upload (machine 2), a re-initialised
machine (machine 3), and a machine whose modem went quiet three days ago with a slot sold
out (the last one, left out of the live simulation). Then the others carry on selling,
faster than real time. `now` is a parameter (the wall clock in production) so that what
the history shows can be checked at any time of day.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import structlog
from sqlalchemy import select

from fleetcore.auth.models import User
from fleetcore.auth.principal import Principal, PrincipalKind, Role
from fleetcore.db import Database
from fleetcore.simulator.vending import NO_ODDITIES, Odd, OddRates, Read, VendingMachine
from fleetcore.simulator.vending_fleet import (
    SimMachine,
    VendingFleet,
    ensure_driver,
    provision_vending,
)
from fleetcore.simulator.vending_runner import DexStats, VendingSimulation, wall_now
from fleetcore.vending.models import Audit, ServiceOrder
from fleetcore_protocol.dex import parse
from fleetcore_protocol.dex.model import Audit as DexAudit

DEMO_MACHINES = 4
HISTORY = timedelta(days=30)
HISTORY_READ_EVERY_H = 24.0  # a read a day in the history: fewer audits to account
DEMO_SPEED = 240.0  # live: 4 simulated hours a minute, so an audit a minute per machine
ROUTE = "Demo route"
DRIVER_EMAIL = "driver@demo.example.com"
QUIET_FOR = timedelta(days=3)  # the last machine's silence (pages flag 48 h)
# Which read of the history each odd case replaces: (machine index, how long before now).
FORCED = {1: (Odd.DAMAGED, timedelta(hours=20)), 2: (Odd.DUPLICATE, timedelta(days=10))}
FORCED_REINIT = (3, timedelta(days=15))

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class DemoVending:
    """The demo's vending side: the fleet and driver, then what fill_demo_vending did."""

    fleet: VendingFleet
    driver_email: str
    driver_password: str
    admin_email: str = ""  # whose name today's service order is created in
    backfilled: int = 0  # audits uploaded now (0: the history was there)
    order_created: bool = False
    live: list[SimMachine] = field(default_factory=list)
    models: list[VendingMachine] = field(default_factory=list)


async def ensure_demo_vending(
    database: Database, *, organization: str, seed: int = 0
) -> DemoVending:
    """The demo's vending fleet and driver (fast: before the server starts)."""
    fleet = await provision_vending(
        database, organization=organization, count=DEMO_MACHINES, seed=seed, route=ROUTE
    )
    password = await ensure_driver(
        database,
        organization_id=fleet.organization_id,
        route_id=fleet.route_id,
        email=DRIVER_EMAIL,
    )
    return DemoVending(fleet, DRIVER_EMAIL, password)


async def fill_demo_vending(
    database: Database,
    demo: DemoVending,
    *,
    admin_email: str,
    now: datetime,
    seed: int = 0,
    stop: asyncio.Event | None = None,
) -> None:
    """The history (once), today's issued service order (once), and the live machines.

    Seconds of work on SQLite (each audit is accounted slot by slot), so `serve --demo`
    runs it once the server answers. `now` (naive UTC, as DEX times) ends the history and
    dates the order. `stop` cuts the history short: the next start carries on from each
    machine's last audit, and the next read covers the gap.
    """
    fleet = demo.fleet
    last_reads = await _last_reads(database, fleet)
    # No history yet: from 30 days ago, a read a day; else from each machine's last audit.
    start = (now - HISTORY).replace(hour=6, minute=0, second=0) if not last_reads else now
    models = [
        VendingMachine(
            m.plan, start=start, seed=seed, odd=NO_ODDITIES, read_every_h=HISTORY_READ_EVERY_H
        )
        for m in fleet.machines
    ]
    if not last_reads:
        demo.backfilled = await _backfill(database, fleet, models, now, stop or asyncio.Event())
    for machine, model in zip(fleet.machines, models, strict=True):
        if (last := last_reads.get(machine.device_id)) is not None:
            model.resume(last, now=now)
    demo.live, demo.models = fleet.machines[:-1], models[:-1]  # the last one went quiet
    for model in demo.models:
        if model.next_read_at < now:  # a history cut short: carry on from now
            model.next_read_at = now
        model.read_every_h, model.odd_rates = 4.0, OddRates()
    demo.order_created = await _todays_order(database, fleet, admin_email, now.date())


class DemoVendingRun:
    """`serve --demo`'s vending work once the server answers: the history, then (with
    `live`) the machines selling and uploading to the server until `stop` is set."""

    def __init__(
        self,
        demo: DemoVending,
        *,
        open_database: Callable[[], Database],
        admin_email: str,
        http_url: str,
        live: bool,
    ) -> None:
        self.demo, self.open_database, self.admin_email = demo, open_database, admin_email
        self.http_url, self.live = http_url, live
        self.stop = asyncio.Event()

    async def run(self) -> DexStats:
        """Fill, then sell until stopped; the live uploads' counts."""
        database = self.open_database()
        try:
            await fill_demo_vending(
                database, self.demo, admin_email=self.admin_email, now=wall_now(), stop=self.stop
            )
        finally:
            await database.close()
        log.info(
            "vending demo ready",
            history_audits=self.demo.backfilled,
            order_created=self.demo.order_created,
        )
        if not self.live or self.stop.is_set():
            return DexStats()
        simulation = VendingSimulation(
            self.demo.live, http_url=self.http_url, speed=DEMO_SPEED, models=self.demo.models
        )
        simulation.stop = self.stop
        return await simulation.run()


async def _last_reads(database: Database, fleet: VendingFleet) -> dict[uuid.UUID, DexAudit]:
    """Each machine's latest accounted audit, parsed again (none: no history yet)."""
    last: dict[uuid.UUID, DexAudit] = {}
    async with database.session() as session:
        for machine in fleet.machines:
            row = await session.scalar(
                select(Audit)
                .where(Audit.device_id == machine.device_id, Audit.accounted.is_(True))
                .order_by(Audit.read_at.desc(), Audit.id.desc())
                .limit(1)
            )
            if row is not None:
                parsed = parse(row.raw).audits
                if row.set_index < len(parsed):
                    last[machine.device_id] = parsed[row.set_index]
    return last


def _history(model: VendingMachine, index: int, now: datetime, last: int) -> list[Read]:
    """The machine's reads up to now (the last machine's stop QUIET_FOR ago)."""
    quiet = index == last
    until = now - QUIET_FOR if quiet else now
    forced = {FORCED[index]} if index in FORCED else set()
    if index == FORCED_REINIT[0]:
        forced.add((Odd.REINITIALISED, FORCED_REINIT[1]))
    pending = sorted(forced, key=lambda f: -f[1])  # the oldest first
    reads: list[Read] = []
    # Today's sales visible by the hour: a read every 4 h from the daily read whose successor
    # may fall within the last day (a daily read comes up to 1.25 days after the one before;
    # switching later could leave the last read a day old, whatever the time of day).
    hourly_from = now - timedelta(days=1, hours=1.25 * HISTORY_READ_EVERY_H)
    while model.next_read_at < until:
        if model.next_read_at >= hourly_from:
            model.read_every_h = 4.0
        odd = None
        if pending and model.next_read_at >= now - pending[0][1]:
            odd = pending.pop(0)[0]
        reads.append(model.next_read(odd=odd))
    if quiet:
        # Its last read, as the modem went quiet, shows a slot sold out: whether the live
        # machines' last reads have one depends on the time of day, and /vending should
        # show one at any time. Nothing reads this machine again, so the slot stays so.
        model.next_read_at = until
        reads.append(model.next_read(run_on=model.plan.slots[0].slot))
    return reads


async def _backfill(
    database: Database,
    fleet: VendingFleet,
    models: list[VendingMachine],
    now: datetime,
    stop: asyncio.Event,
) -> int:
    from fleetcore.vending.audits import ingest_dex

    uploads = 0
    for machine, model in zip(fleet.machines, models, strict=True):
        for read in _history(model, machine.plan.index, now, len(models)):
            if stop.is_set():
                return uploads
            for _ in range(2 if read.odd is Odd.DUPLICATE else 1):
                async with database.session(write=True) as session:
                    await ingest_dex(
                        session,
                        organization_id=fleet.organization_id,
                        device_id=machine.device_id,
                        raw=read.data,
                        source="simulator",
                    )
                uploads += 1
    return uploads


async def _todays_order(
    database: Database, fleet: VendingFleet, admin_email: str, today: date
) -> bool:
    """An issued service order for today on the demo route, unless the route has one."""
    from fleetcore.vending.service_orders import create_order, issue_order
    from fleetcore.vending.service_schemas import OrderIn

    async with database.session(write=True) as session:
        exists = await session.scalar(
            select(ServiceOrder.id).where(
                ServiceOrder.route_id == fleet.route_id, ServiceOrder.service_date == today
            )
        )
        admin = await session.scalar(select(User).where(User.email == admin_email))
        driver = await session.scalar(select(User.id).where(User.email == DRIVER_EMAIL))
        if exists is not None or admin is None:
            return False
        manager = Principal(
            kind=PrincipalKind.USER,
            subject_id=admin.id,
            organization_id=fleet.organization_id,
            role=Role.ADMIN,
            is_superuser=admin.is_superuser,
        )
        order = await create_order(
            session,
            manager,
            fleet.route_id,
            data=OrderIn(service_date=today, driver_id=driver, note="Demo: today's round"),
        )
        order_id: uuid.UUID = order.id
    async with database.session(write=True) as session:
        await issue_order(session, manager, order_id)
    return True
