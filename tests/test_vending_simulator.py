"""The vending simulator: its sales model, provisioning, runs against a real server, the demo."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from fleetcore.auth.models import User
from fleetcore.db import Database
from fleetcore.demo import DEMO_SLUG, ensure_demo
from fleetcore.devices.models import Device
from fleetcore.simulator.vending import (
    CATALOGUE,
    NO_ODDITIES,
    Odd,
    OddRates,
    SlotTruth,
    VendingMachine,
    ean13,
    fleet,
    machine_plan,
)
from fleetcore.simulator.vending_demo import (
    DEMO_MACHINES,
    DRIVER_EMAIL,
    HISTORY,
    HISTORY_READ_EVERY_H,
    QUIET_FOR,
    DemoVending,
    _history,
    ensure_demo_vending,
    fill_demo_vending,
)
from fleetcore.simulator.vending_fleet import ensure_driver, provision_vending
from fleetcore.simulator.vending_runner import DEX_PATH, VendingSimulation, wall_now
from fleetcore.vending.accounting import compute_interval
from fleetcore.vending.models import (
    Audit,
    Cabinet,
    Machine,
    Planogram,
    PlanogramSlot,
    Product,
    Route,
    RouteDriver,
    Sale,
    ServiceOrder,
    SlotStock,
)
from fleetcore.vending.snapshot import snapshot
from fleetcore_protocol.dex import parse
from fleetcore_protocol.dex.model import WarningCode
from tests.support.env import live_command_env, simulate
from tests.support.http_clients import local_client
from tests.support.serving import serving
from tests.support.wait import wait_until
from tests.test_simulator import _serve_demo, _sqlite_count, _stop

START = datetime(2026, 3, 2, 7, 0)  # a Monday
ODD = OddRates(damaged=0.08, reinitialised=0.05, duplicate=0.08)
# The demo's history ends here: a Monday evening when none of the live machines' last reads
# has an empty slot (what the history shows depends on the weekday and time of day only).
DEMO_NOW = datetime(2025, 12, 1, 20, 45)


def _reads(machine: VendingMachine, until: datetime) -> list:  # type: ignore[type-arg]
    out = []
    while machine.next_read_at <= until:
        out.append(machine.next_read())
    return out


# -- the model ----------------------------------------------------------------------------


def test_same_seed_same_files() -> None:
    def files(seed: int) -> list[bytes]:
        machine = VendingMachine(machine_plan(1, seed), start=START, seed=seed, odd=ODD)
        return [r.data for r in _reads(machine, START + timedelta(days=10))]

    first = files(5)
    assert first == files(5)
    assert first != files(6)
    assert len(first) > 40


def test_catalogue_and_layouts_are_realistic() -> None:
    for item in CATALOGUE:
        assert ean13(item.ean[:12]) == item.ean
        assert len(item.ean) == 13
        assert item.unit_cost < item.price
    assert len({i.sku for i in CATALOGUE}) == len(CATALOGUE)
    for index in range(1, 7):
        plan = machine_plan(index)
        snacks = [s for s in plan.slots if s.cabinet == "snacks"]
        drinks = [s for s in plan.slots if s.cabinet == "drinks"]
        assert 20 <= len(snacks) <= 30
        assert drinks == [] if index % 3 == 0 else 8 <= len(drinks) <= 10
        assert len({s.slot for s in plan.slots}) == len(plan.slots)  # codes unique per machine
    assert ean13("400638133393") == "4006381333931"  # a published EAN-13


def test_files_parse_cleanly_except_the_damaged_ones() -> None:
    odd: Tally[Odd | None] = Tally()
    for machine in fleet(3, start=START, seed=2, odd=ODD):
        for read in _reads(machine, START + timedelta(days=14)):
            odd[read.odd] += 1
            parsed = parse(read.data)
            codes = {w.code for w in parsed.all_warnings}
            if read.odd is Odd.DAMAGED:
                assert codes == {WarningCode.CRC_MISMATCH}
                assert parsed.audits[0].damaged
            else:
                assert codes == set(), (read.number, parsed.all_warnings)
            assert parsed.audits[0].machine.serial == machine.plan.serial
            assert parsed.audits[0].read_time == read.at.replace(microsecond=0)
    assert odd[Odd.DAMAGED]
    assert odd[Odd.REINITIALISED]
    assert odd[Odd.DUPLICATE]
    assert odd[None]


def test_counters_grow_except_at_a_reinitialisation_and_match_the_truth() -> None:
    machine = VendingMachine(machine_plan(2), start=START, seed=3, odd=ODD)
    previous: dict[str, int] = {}
    reinitialised = 0
    for read in _reads(machine, START + timedelta(days=21)):
        products = {p.selection: p for p in parse(read.data).audits[0].products}
        counts = {slot: p.paid.count_init or 0 for slot, p in products.items()}
        if read.odd is Odd.REINITIALISED:
            # Zero just after the previous read: at most this interval's sales.
            reinitialised += sum(counts.values()) < sum(previous.values())
            assert all(p.paid.count_init == p.paid.count_reset for p in products.values())
        elif read.odd is not Odd.DAMAGED and previous:
            assert all(counts[s] >= previous[s] for s in counts), read.number
        if read.odd is not Odd.DAMAGED:  # (a damaged file's digits are not to be trusted)
            for p in products.values():  # since reset: this read's interval only (SD1 AUTO)
                assert (p.paid.count_reset or 0) <= (p.paid.count_init or 0)
            previous = counts
    assert reinitialised
    # Without re-initialisations, the counters since initialisation are the truth.
    clean = VendingMachine(machine_plan(2), start=START, seed=3, odd=NO_ODDITIES)
    last = _reads(clean, START + timedelta(days=21))[-1]
    products = {p.selection: p for p in parse(last.data).audits[0].products}
    for slot, truth in clean.truth.items():
        paid = products[slot].paid
        assert (paid.count_init, paid.value_init) == (truth.units, truth.revenue)
        assert products[slot].test.count_init == truth.test_vends


def _sold(machine: VendingMachine) -> dict[str, tuple[object, ...]]:
    return {
        slot: (t.units, t.revenue, t.cash_units, t.cashless_units, t.test_vends, t.free_vends)
        for slot, t in machine.truth.items()
        if t != SlotTruth()
    }


def test_the_reads_show_all_the_truth_counts_wherever_the_run_stops() -> None:
    """Stopped after any clean read, the reads account the truth exactly: nothing in the
    truth that no read shows (a visit's test vend after the last read, a sale before it)."""
    checked = visit_reads = 0
    odd: Tally[Odd | None] = Tally()
    for start in (START, START.replace(hour=10, minute=30), START.replace(hour=23, minute=50)):
        machine = VendingMachine(machine_plan(1, 7), start=start, seed=7, odd=ODD)
        accounted: dict[str, tuple[Any, ...]] = {}
        previous: dict[str, object] | None = None
        tested = 0
        while machine.next_read_at <= start + timedelta(days=10):
            read = machine.next_read()  # the truth is checked as it stands after each read
            odd[read.odd] += 1
            if sum(t.test_vends for t in machine.truth.values()) > tested:
                visit_reads += 1  # the previous read was a visit's, and was checked
                tested = sum(t.test_vends for t in machine.truth.values())
            if read.odd is Odd.DAMAGED:
                continue  # held by the platform: the next clean read covers its interval
            current = snapshot(parse(read.data).audits[0])
            for s in compute_interval(previous, current).slots:
                row = (
                    s.units,
                    s.revenue,
                    s.cash_units,
                    s.cashless_units,
                    s.test_vends,
                    s.free_vends,
                )
                total = accounted.get(s.slot, (0, Decimal(0), 0, 0, 0, 0))
                accounted[s.slot] = tuple(a + b for a, b in zip(total, row, strict=True))
            previous = current
            got = {slot: total for slot, total in accounted.items() if any(total)}
            assert got == _sold(machine), (start, read.number, read.odd)
            checked += 1
    assert checked > 100
    assert visit_reads >= 9
    assert odd[Odd.DAMAGED]
    assert odd[Odd.REINITIALISED]
    assert odd[Odd.DUPLICATE]


def test_sales_follow_the_day_and_products_differ() -> None:
    machine = VendingMachine(machine_plan(1), start=START, seed=4, odd=NO_ODDITIES)
    machine.read_every_h = 1.0
    by_hour: Tally[int] = Tally()
    weekday_units = weekend_units = 0
    before = 0
    while machine.next_read_at <= START + timedelta(days=28):
        read = machine.next_read()
        units = sum(t.units for t in machine.truth.values())
        by_hour[read.at.hour] += units - before
        if read.at.weekday() >= 5:
            weekend_units += units - before
        else:
            weekday_units += units - before
        before = units
    assert by_hour[13] > 5 * by_hour[3]  # lunch against the night
    assert weekday_units / 5 > 1.5 * weekend_units / 2
    sold = sorted(t.units for t in machine.truth.values())
    assert sold[-1] > 4 * max(sold[0], 1)  # fast and slow sellers
    assert any(s.sold_out_at is not None for s in machine.slots.values())


def test_a_sold_out_slot_stops_selling_and_counts_selections() -> None:
    machine = VendingMachine(machine_plan(1), start=START, seed=4, odd=NO_ODDITIES)
    machine.read_every_h = 24 * 6  # no visit for six days: the fast sellers run out
    machine.next_read()  # installed full at 7:00, before the first visit (9:00)
    read = machine.next_read()  # about six days later
    products = {p.selection: p for p in parse(read.data).audits[0].products}
    empty = [p for p in products.values() if p.current_level == 0]
    assert empty
    for product in empty:
        assert product.sold_out is not None
        assert product.sold_out.date is not None
        dispensed = (product.paid.count_init, product.free.count_init, product.test.count_init)
        assert sum(n or 0 for n in dispensed) == product.capacity
    assert sum(p.sold_out.selected_while_sold_out or 0 for p in empty if p.sold_out) > 0


def test_resume_carries_on_from_a_parsed_audit() -> None:
    first = VendingMachine(machine_plan(1), start=START, seed=4, odd=NO_ODDITIES)
    last = _reads(first, START + timedelta(days=3))[-1]
    again = VendingMachine(machine_plan(1), start=START, seed=9, odd=NO_ODDITIES)
    later = last.at + timedelta(hours=5)
    again.resume(parse(last.data).audits[0], now=later)
    nxt = parse(again.next_read().data).audits[0]
    before = {p.selection: p for p in parse(last.data).audits[0].products}
    assert all(
        (p.paid.count_init or 0) >= (before[p.selection].paid.count_init or 0) for p in nxt.products
    )
    assert sum(p.paid.count_init or 0 for p in nxt.products) > sum(
        p.paid.count_init or 0 for p in before.values()
    )
    assert nxt.read_time == later.replace(microsecond=0)


# -- provisioning -------------------------------------------------------------------------


async def _counts(database: Database) -> dict[str, int]:
    async with database.session() as session:
        return {
            table.__name__: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (
                Device,
                Machine,
                Cabinet,
                Planogram,
                PlanogramSlot,
                Product,
                Route,
                User,
                RouteDriver,
            )
        }


async def test_provisioning_is_idempotent(live_database: Database) -> None:
    first = await provision_vending(live_database, organization="vend-org", count=3)
    password = await ensure_driver(
        live_database,
        organization_id=first.organization_id,
        route_id=first.route_id,
        email="d@example.com",
    )
    counts = await _counts(live_database)
    again = await provision_vending(live_database, organization="vend-org", count=3)
    second_password = await ensure_driver(
        live_database,
        organization_id=first.organization_id,
        route_id=first.route_id,
        email="d@example.com",
    )
    assert await _counts(live_database) == counts
    assert (first.created, first.reused, again.created, again.reused) == (3, 0, 0, 3)
    assert first.products_created == len(CATALOGUE)
    assert again.products_created == 0
    assert [m.device_id for m in again.machines] == [m.device_id for m in first.machines]
    assert password != second_password
    plans = [machine_plan(i) for i in (1, 2, 3)]
    assert counts["Cabinet"] == sum(len(p.cabinets) for p in plans)
    assert counts["PlanogramSlot"] == sum(len(p.slots) for p in plans)
    assert counts["Planogram"] == counts["Cabinet"]
    assert counts["RouteDriver"] == 1


# -- against a real server ------------------------------------------------------------------


async def _accounted(
    database: Database, device_ids: list[uuid.UUID]
) -> dict[tuple[uuid.UUID, str], tuple[object, ...]]:
    async with database.session() as session:
        rows = await session.execute(
            select(
                Sale.device_id,
                Sale.slot,
                func.sum(Sale.units),
                func.sum(Sale.revenue),
                func.sum(Sale.cash_units),
                func.sum(Sale.cashless_units),
                func.sum(Sale.test_vends),
                func.sum(Sale.free_vends),
            )
            .where(Sale.device_id.in_(device_ids))
            .group_by(Sale.device_id, Sale.slot)
        )
        # sum() keeps the Money type: revenue comes back as Decimal.
        return {(row[0], row[1]): tuple(row[2:]) for row in rows}


async def test_the_platform_accounts_exactly_what_the_machines_sold(
    live_app: FastAPI, live_database: Database
) -> None:
    vending = await provision_vending(live_database, organization="vend-org", count=2, seed=7)
    async with serving(live_app) as address:
        simulation = VendingSimulation(
            vending.machines,
            http_url=f"http://{address}",
            speed=86_400 * 2,
            seed=7,
            odd=ODD,
            start=START,  # the simulated days (visits at 9:00) do not follow the wall clock
        )
        running = asyncio.create_task(simulation.run())
        try:
            await wait_until(lambda: simulation.stats.reads >= 60 or running.done(), within=60)
        finally:
            simulation.stop.set()
        stats = await running
        # One clean read more, so the last read of each machine is one the books count.
        async with local_client(base_url=f"http://{address}") as http:
            for machine, model in zip(vending.machines, simulation.models, strict=True):
                model.odd_rates = NO_ODDITIES
                # Written at the real time, as the runner's are: the latest of the machine.
                read = model.next_read(stamp=lambda _: wall_now())
                answer = await http.post(
                    DEX_PATH, content=read.data, headers={"X-Device-Token": machine.token}
                )
                assert answer.status_code in (200, 201), answer.text
    assert stats.refused == 0, stats.last_error
    assert stats.odd.get("damaged")
    assert stats.odd.get("duplicate")
    assert stats.odd.get("reinitialised")
    assert stats.damaged == stats.odd["damaged"]
    assert stats.duplicates == stats.odd["duplicate"]
    accounted = await _accounted(live_database, [m.device_id for m in vending.machines])
    for machine, model in zip(vending.machines, simulation.models, strict=True):
        for slot, truth in model.truth.items():
            expected = (
                truth.units,
                truth.revenue,
                truth.cash_units,
                truth.cashless_units,
                truth.test_vends,
                truth.free_vends,
            )
            got = accounted.get((machine.device_id, slot), (0, Decimal(0), 0, 0, 0, 0))
            assert got == expected, (machine.plan.serial, slot)
    assert sum(t.units for m in simulation.models for t in m.truth.values()) > 500


async def test_the_command_provisions_and_uploads_to_a_running_server(
    live_app: FastAPI, live_database: Database, tmp_path: Path
) -> None:
    env = live_command_env(live_database.engine.url, tmp_path)
    async with serving(live_app) as address:
        result = await asyncio.to_thread(
            simulate,
            "vending",
            "--devices",
            "2",
            "--duration",
            "4",
            "--speed",
            "20000",
            "--url",
            f"http://{address}",
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "2 vending machines in organization 'demo' (2 created, 0 reused" in result.stdout
        async with live_database.session() as session:
            stored = await session.scalar(select(func.count()).select_from(Audit))
        assert stored
        assert stored >= 4
        assert f"stored {stored:,}" in result.stdout
        again = await asyncio.to_thread(
            simulate,
            "vending",
            "--devices",
            "2",
            "--duration",
            "1",
            "--url",
            f"http://{address}",
            env=env,
        )
    assert again.returncode == 0, again.stderr
    assert "(0 created, 2 reused" in again.stdout
    async with live_database.session() as session:
        devices = await session.scalar(select(func.count()).select_from(Device))
    assert devices == 2


# -- the demo (make run) --------------------------------------------------------------------


def test_the_demo_history_ends_with_a_sold_out_slot_at_any_time_of_day() -> None:
    # The quiet machine's history: the one that guarantees a sold-out slot (whether the
    # live machines' last reads have one depends on the time of day).
    quiet = DEMO_MACHINES
    for day in (DEMO_NOW, DEMO_NOW + timedelta(days=5)):  # a Monday, a Saturday
        for hour in range(0, 24, 2):
            now = day.replace(hour=hour, minute=25)
            start = (now - HISTORY).replace(hour=6, minute=0, second=0)
            model = VendingMachine(
                machine_plan(quiet),
                start=start,
                odd=NO_ODDITIES,
                read_every_h=HISTORY_READ_EVERY_H,
            )
            *_, before, last = _history(model, quiet, now, DEMO_MACHINES)
            assert last.at == now - QUIET_FOR
            empty = [p for p in parse(last.data).audits[0].products if p.current_level == 0]
            assert empty, now
            times = [
                datetime.combine(out.date, out.time)
                for p in empty
                if (out := p.sold_out) is not None and out.date and out.time
            ]
            assert any(before.at < t <= last.at for t in times), now


async def _demo_counts(database: Database) -> dict[str, int]:
    async with database.session() as session:
        return {
            table.__name__: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in (Device, Product, Audit, Sale, ServiceOrder, User, RouteDriver)
        }


async def test_the_demo_has_history_once_and_every_part_of_the_vending_pages_has_data(
    live_database: Database,
) -> None:
    login = await ensure_demo(live_database)

    async def start() -> DemoVending:
        demo = await ensure_demo_vending(live_database, organization=DEMO_SLUG)
        await fill_demo_vending(live_database, demo, admin_email=login.email, now=DEMO_NOW)
        return demo

    first = await start()
    counts = await _demo_counts(live_database)
    again = await start()
    assert await _demo_counts(live_database) == counts  # nothing made twice
    assert first.backfilled > 4 * 25  # a read a day, a month
    assert again.backfilled == 0
    assert (first.order_created, again.order_created) == (True, False)
    assert first.driver_password != again.driver_password
    assert len(again.live) == len(again.models) == DEMO_MACHINES - 1
    now = DEMO_NOW.replace(tzinfo=UTC)
    async with live_database.session() as session:
        statuses = Tally(await session.scalars(select(Audit.status)))
        assert statuses["damaged"] == 1  # waiting for a manager
        assert statuses["accepted"] == counts["Audit"] - 1
        reinit = await session.scalar(
            select(func.count()).select_from(Sale).where(Sale.basis == "reinitialised")
        )
        assert reinit
        last = list(
            await session.scalars(select(Machine.last_audit_at).order_by(Machine.last_audit_at))
        )
        assert last[0] is not None
        assert last[0] < now - timedelta(days=2)
        assert all(t is not None and t > now - timedelta(hours=6) for t in last[1:])
        day = await session.scalar(
            select(func.sum(Sale.units)).where(Sale.period_end > now - timedelta(days=1))
        )
        month = await session.scalar(select(func.sum(Sale.units)))
        assert day
        assert month
        assert month > 20 * day
        # The quiet machine's last read shows a run on a product that emptied a slot: marked
        # when it sold out (PA5, since the read before), not when it was read.
        quiet = await session.scalar(select(Machine).order_by(Machine.last_audit_at).limit(1))
        assert quiet is not None
        sold_out = list(
            await session.scalars(
                select(SlotStock)
                .join(Cabinet, Cabinet.id == SlotStock.cabinet_id)
                .where(Cabinet.device_id == quiet.device_id, SlotStock.sold_out_at.is_not(None))
            )
        )
        assert any(
            s.fill_level == 0 and s.sold_out_at is not None and s.sold_out_at < last[0]
            for s in sold_out
        )
        order = await session.scalar(select(ServiceOrder))
        assert order is not None
        assert order.state == "issued"
        assert order.service_date == DEMO_NOW.date()
        driver = await session.scalar(select(User).where(User.email == DRIVER_EMAIL))
        assert driver is not None
        assert driver.role == "driver"
        assert order.driver_id == driver.id


async def test_serve_demo_shows_vending_history_then_live_audits(tmp_path: Path) -> None:
    database = tmp_path / "fleetcore.db"
    process, _ = _serve_demo(tmp_path)
    audits = "SELECT count(*) FROM vending_audits"
    live = "SELECT count(*) FROM vending_audits WHERE source = 'http'"
    try:
        await wait_until(
            lambda: _sqlite_count(database, live) >= 3 or process.poll() is not None,
            within=90,
            every=0.2,
        )
    finally:
        output = _stop(process)
    assert process.returncode in (0, 130, -signal.SIGINT), output
    assert "Traceback" not in output
    assert f"Driver    {DRIVER_EMAIL}" in output
    assert _sqlite_count(database, audits) > 4 * 25
    assert _sqlite_count(database, "SELECT count(*) FROM vending_service_orders") == 1
    stopped = [
        json.loads(line) for line in output.splitlines() if "vending simulator stopped" in line
    ]
    assert len(stopped) == 1, output
    assert stopped[0]["refused"] == 0
    assert stopped[0]["stored"] == _sqlite_count(database, live)
