"""Simulated vending machines: a pure, seeded sales model that writes DEX audits.

A machine has a snack cabinet (slots A1…E6) and often a drinks cabinet (slots 70…79),
each slot holding a product of CATALOGUE. Customers arrive in 5-minute steps at a rate
that follows the day (busy at lunch and mid-afternoon, quiet at night, slower at the
weekend) and pick a slot by its product's popularity; a slot that is empty stops selling
and counts the selections made while sold out (PA5). The machine is read every few hours
(`next_read`): counters since initialisation accumulate, those since reset are cleared by
each read (SD1 AUTO), and a service visit every few days refills every slot and makes a
test vend. Odd cases come at low, seeded rates: a damaged file (one digit changed, so the
CRC fails), a machine re-initialised (every counter back to zero just after a read), and
the same file uploaded twice.

Nothing here does I/O or reads the clock: the same seed and start give the same files.
`Truth` keeps what really sold up to the last read, for tests to compare with the
platform's accounting: the test vend of a visit made just after a read joins it at the
next read, so the truth never holds one that no read shows (the runner stops anywhere).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum

from fleetcore_protocol.dex.model import Audit as DexAudit
from fleetcore_protocol.dex.model import Counter, SoldOut
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write

STEP = timedelta(minutes=5)
RUN_BEFORE_READ = timedelta(minutes=30)  # next_read(run_on=): when the slot sells out
READ_EVERY_H = 4.0  # a read every 4 h ± 25 % of simulated time
VISIT_EVERY_DAYS = (2, 3)  # a refill visit every 2 or 3 days, at the first read after 9:00
CASHLESS_SHARE = 0.55
FREE_VEND_RATE = 0.01
# Relative arrival rate by hour of the day (weekdays); weekends are WEEKEND times as busy.
HOURLY = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.08, 0.3, 0.6, 0.8, 0.7, 0.8, 1.2,
    2.0, 1.8, 1.0, 1.6, 1.5, 0.9, 0.6, 0.4, 0.3, 0.2, 0.1, 0.08,
)  # fmt: skip
WEEKEND = 0.4


@dataclass(frozen=True, slots=True)
class Item:
    """A product of the simulated catalogue."""

    sku: str
    name: str
    ean: str
    category: str
    price: Decimal
    unit_cost: Decimal
    case_size: int
    popularity: float  # relative: 2.0 sells twice as often as 1.0
    drink: bool = False


def ean13(stem: str) -> str:
    """`stem` (12 digits) with its EAN-13 check digit."""
    if len(stem) != 12 or not stem.isdigit():
        raise ValueError(f"an EAN-13 stem is 12 digits, not {stem!r}")
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(stem))
    return stem + str((10 - total % 10) % 10)


def _item(n: int, name: str, category: str, price: str, cost: str, case: int, pop: float) -> Item:
    drink = n >= 100
    sku = f"{'DRK' if drink else 'SNK'}-{n % 100:03d}"
    return Item(
        sku, name, ean13(f"5401234{n:05d}"), category, Decimal(price), Decimal(cost), case, pop,
        drink,
    )  # fmt: skip


CATALOGUE: tuple[Item, ...] = (
    _item(1, "Salted crisps 40 g", "Crisps", "1.20", "0.42", 24, 1.6),
    _item(2, "Paprika crisps 40 g", "Crisps", "1.20", "0.42", 24, 1.1),
    _item(3, "Sour cream crisps 40 g", "Crisps", "1.20", "0.44", 24, 0.7),
    _item(4, "Milk chocolate bar 50 g", "Chocolate", "1.40", "0.55", 36, 1.8),
    _item(5, "Dark chocolate bar 45 g", "Chocolate", "1.50", "0.62", 36, 0.5),
    _item(6, "Caramel wafer 37 g", "Chocolate", "1.10", "0.38", 48, 1.2),
    _item(7, "Peanut bar 45 g", "Bars", "1.30", "0.50", 24, 0.9),
    _item(8, "Granola bar 40 g", "Bars", "1.30", "0.48", 24, 0.6),
    _item(9, "Salted peanuts 50 g", "Nuts", "1.00", "0.31", 30, 0.8),
    _item(10, "Trail mix 60 g", "Nuts", "1.80", "0.80", 20, 0.3),
    _item(11, "Butter cookies 75 g", "Biscuits", "1.30", "0.45", 24, 1.0),
    _item(12, "Chocolate cookies 75 g", "Biscuits", "1.40", "0.50", 24, 1.3),
    _item(13, "Pretzel sticks 50 g", "Crisps", "1.00", "0.30", 30, 0.6),
    _item(14, "Gummy bears 75 g", "Sweets", "1.20", "0.40", 30, 1.0),
    _item(15, "Mint chewing gum", "Sweets", "0.90", "0.28", 50, 0.4),
    _item(16, "Rice cakes 30 g", "Bars", "1.10", "0.45", 24, 0.15),
    _item(101, "Still water 50 cl", "Water", "1.00", "0.22", 24, 1.6),
    _item(102, "Sparkling water 50 cl", "Water", "1.00", "0.24", 24, 0.8),
    _item(103, "Cola 33 cl", "Soft drinks", "1.50", "0.45", 24, 2.0),
    _item(104, "Cola zero 33 cl", "Soft drinks", "1.50", "0.45", 24, 1.3),
    _item(105, "Orange soda 33 cl", "Soft drinks", "1.50", "0.44", 24, 0.7),
    _item(106, "Iced tea peach 50 cl", "Soft drinks", "1.80", "0.60", 24, 0.9),
    _item(107, "Energy drink 25 cl", "Energy", "2.20", "0.85", 24, 0.8),
    _item(108, "Orange juice 33 cl", "Juice", "2.00", "0.80", 12, 0.4),
    _item(109, "Cold brew coffee 25 cl", "Coffee", "2.50", "1.05", 12, 0.2),
)
ITEMS = {item.sku: item for item in CATALOGUE}


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """A slot of a simulated machine: its code, cabinet, product, capacity and price."""

    slot: str
    cabinet: str
    sku: str
    capacity: int
    price: Decimal


@dataclass(frozen=True, slots=True)
class MachinePlan:
    """A simulated machine's identity and layout."""

    index: int
    serial: str  # its device serial number and DEX ID101
    name: str
    location: str
    model: str
    slots: tuple[SlotPlan, ...]
    rate_per_h: float  # customers an hour at a relative rate of 1.0

    @property
    def cabinets(self) -> tuple[str, ...]:
        """Cabinet names in display order."""
        return tuple(dict.fromkeys(s.cabinet for s in self.slots))


LOCATIONS = (
    "Head office, ground floor",
    "Warehouse canteen",
    "Hospital, east wing",
    "University library",
    "Train station, platform 2",
    "Sports centre lobby",
    "Car dealership waiting room",
    "Call centre, 3rd floor",
)


def machine_plan(index: int, seed: int = 0) -> MachinePlan:
    """The layout of simulated machine number `index` (1-based): the same for a seed."""
    rnd = random.Random(f"{seed}:{index}:plan")  # noqa: S311
    columns = rnd.choice((4, 5, 6))
    rows = "ABCDE" if columns > 4 else "ABCDEF"
    snacks = [i for i in CATALOGUE if not i.drink]
    rnd.shuffle(snacks)
    # The best sellers get a second facing when there are more slots than products.
    order = snacks + sorted(snacks, key=lambda i: -i.popularity)
    slots = [
        SlotPlan(f"{row}{col}", "snacks", item.sku, rnd.choice((8, 10, 12)), item.price)
        for (row, col), item in zip(
            ((r, c) for r in rows for c in range(1, columns + 1)), order, strict=False
        )
    ]
    if index % 3 != 0:  # two machines in three have a drinks cabinet
        drinks = [i for i in CATALOGUE if i.drink]
        rnd.shuffle(drinks)
        count = rnd.choice((8, 9, 10))
        for n, item in enumerate((drinks * 2)[:count]):
            slots.append(SlotPlan(str(70 + n), "drinks", item.sku, 12, item.price))
    return MachinePlan(
        index=index,
        serial=machine_serial(index),
        name=f"Vending {index:02d}",
        location=LOCATIONS[(index - 1) % len(LOCATIONS)],
        model="SIM-" + ("SD" if index % 3 != 0 else "S"),
        slots=tuple(slots),
        rate_per_h=rnd.uniform(4.0, 7.0),
    )


def machine_serial(index: int) -> str:
    """The serial of simulated vending machine `index`: its device serial and ID101."""
    return f"VSIM-{index:04d}"


class Odd(StrEnum):
    """What is unusual about a read."""

    DAMAGED = "damaged"  # a digit changed after the CRC was computed
    REINITIALISED = "reinitialised"  # the machine's counters were zeroed since the last read
    DUPLICATE = "duplicate"  # the file is uploaded twice


@dataclass(frozen=True, slots=True)
class OddRates:
    """Probability of each odd case per read (the first read of a machine is never odd)."""

    damaged: float = 0.02
    reinitialised: float = 0.01
    duplicate: float = 0.03


NO_ODDITIES = OddRates(0.0, 0.0, 0.0)


@dataclass(slots=True)
class _Counts:
    count: int = 0
    value: Decimal = Decimal(0)

    def add(self, price: Decimal) -> None:
        self.count += 1
        self.value += price


@dataclass(slots=True)
class _Slot:
    plan: SlotPlan
    level: int
    paid: tuple[_Counts, _Counts] = field(default_factory=lambda: (_Counts(), _Counts()))
    cash: tuple[_Counts, _Counts] = field(default_factory=lambda: (_Counts(), _Counts()))
    cashless: tuple[_Counts, _Counts] = field(default_factory=lambda: (_Counts(), _Counts()))
    test: tuple[_Counts, _Counts] = field(default_factory=lambda: (_Counts(), _Counts()))
    free: tuple[_Counts, _Counts] = field(default_factory=lambda: (_Counts(), _Counts()))
    sold_out_at: datetime | None = None
    selected_while_sold_out: int = 0  # since the last reset

    def groups(self) -> tuple[tuple[_Counts, _Counts], ...]:
        return (self.paid, self.cash, self.cashless, self.test, self.free)


@dataclass(slots=True)
class SlotTruth:
    """What a slot really sold up to the last read (re-initialisations do not clear it)."""

    units: int = 0
    revenue: Decimal = Decimal(0)
    cash_units: int = 0
    cashless_units: int = 0
    test_vends: int = 0
    free_vends: int = 0


@dataclass(frozen=True, slots=True)
class Read:
    """One audit read of a machine: the DEX file and what is odd about it."""

    number: int  # 1-based
    at: datetime  # simulated time of the read
    data: bytes
    odd: Odd | None = None


def _counter(pair: tuple[_Counts, _Counts]) -> Counter:
    init, reset = pair
    return Counter(init.value, init.count, reset.value, reset.count)


def _poisson(rnd: random.Random, mean: float) -> int:
    # Knuth's method: the means here are small (a few customers per step).
    limit, k, p = math.exp(-mean), 0, rnd.random()
    while p > limit:
        k += 1
        p *= rnd.random()
    return k


class VendingMachine:
    """One simulated machine, from `start` on; `next_read()` advances it to its next read."""

    def __init__(
        self,
        plan: MachinePlan,
        *,
        start: datetime,
        seed: int = 0,
        odd: OddRates = OddRates(),
        read_every_h: float = READ_EVERY_H,
    ) -> None:
        self.plan, self.odd_rates = plan, odd
        self.read_every_h = read_every_h  # may change between reads (the demo's history)
        self.clock = start
        self.slots = {p.slot: _Slot(p, p.capacity) for p in plan.slots}
        self.truth = {p.slot: SlotTruth() for p in plan.slots}
        self.reads = 0  # reads with reset since initialisation (EA301)
        self._number = 0
        self._rnd = random.Random(f"{seed}:{plan.index}:sales")  # noqa: S311
        self._odd = random.Random(f"{seed}:{plan.index}:odd")  # noqa: S311
        self._weights = {
            s: ITEMS[p.plan.sku].popularity * self._rnd.uniform(0.7, 1.3)
            for s, p in self.slots.items()
        }
        self._next_visit = start.replace(hour=9, minute=0, second=0, microsecond=0)
        self._reinitialised = False  # since the last read: the next one shows it
        self._tested: str | None = None  # the slot test-vended since the last read
        self.next_read_at = start  # the first read: the machine as installed, all zero

    def next_read(
        self,
        *,
        odd: Odd | None = None,
        stamp: Callable[[datetime], datetime] | None = None,
        run_on: str | None = None,
    ) -> Read:
        """Sell until the next scheduled read and make its file.

        `odd` forces an odd case, else one is drawn at the configured rates. A forced
        REINITIALISED re-initialises the machine just after this read, so the NEXT read is
        the one that shows it (and says so); nothing sold is lost in between. `stamp` maps
        simulated times to the times written in the file (default: the same). `run_on`
        (a selection) is a run on that product shortly before the read: it sells until
        the slot is empty, so the read shows it sold out.
        """
        if self._tested is not None:  # the visit's test vend, in the file from this read on
            self.truth[self._tested].test_vends += 1
            self._tested = None
        since = self.clock
        self._advance(self.next_read_at)
        at, self._number = self.next_read_at, self._number + 1
        if run_on is not None:
            # Within the interval this read covers: its PA5 time is news since the last read.
            run_at = max(since + (at - since) / 2, at - RUN_BEFORE_READ)
            while self.slots[run_on].level > 0:
                self._sell(run_on, run_at)
        reinitialise_after = odd is Odd.REINITIALISED
        if self._reinitialised:
            odd = Odd.REINITIALISED  # it shows now, whatever else was asked for
        elif odd is None or reinitialise_after:
            odd = self._draw_odd() if self._number > 1 else None
        self.reads += 1
        data = write(self._audit(at, stamp or (lambda t: t)))
        if odd is Odd.DAMAGED:
            data = _damage(data, self._odd)
        for slot in self.slots.values():  # SD1 AUTO: the read clears the since-reset counters
            for pair in slot.groups():
                pair[1].count, pair[1].value = 0, Decimal(0)
            slot.selected_while_sold_out = 0
        # Re-initialised just after a clean read: after a damaged one, the damaged read's
        # interval would be lost for good (no counter keeps it) and truth would not compare.
        self._reinitialised = odd is not Odd.DAMAGED and (
            reinitialise_after or self._odd.random() < self.odd_rates.reinitialised
        )
        if self._reinitialised:
            self._reinitialise()
        if at >= self._next_visit:
            self._visit(at)
        hours = self.read_every_h * self._rnd.uniform(0.75, 1.25)
        self.next_read_at = at + timedelta(hours=hours)
        return Read(self._number, at, data, odd)

    def resume(self, audit: DexAudit, *, now: datetime) -> None:
        """Carry on from a machine's last audit (another run's): its counters since
        initialisation, slot levels and sold-out times; the next read is at `now`."""
        for product in audit.products:
            slot = self.slots.get(product.selection)
            if slot is None:
                continue
            payments = {p.device: p.counter for p in product.by_payment}
            for pair, counter in (
                (slot.paid, product.paid),
                (slot.cash, payments.get("CA")),
                (slot.cashless, payments.get("DA")),
                (slot.test, product.test),
                (slot.free, product.free),
            ):
                if counter is not None:
                    pair[0].count = counter.count_init or 0
                    pair[0].value = counter.value_init or Decimal(0)
            if product.current_level is not None:
                slot.level = product.current_level
            sold_out = product.sold_out
            if sold_out is not None and sold_out.date is not None:
                slot.sold_out_at = datetime.combine(sold_out.date, sold_out.time or time())
        self.reads = (audit.read.reads_with_reset_init if audit.read else None) or 0
        self._number = max(self._number, 1)  # not the machine's first read any more
        self.clock = min(audit.read_time or now, now)
        self.next_read_at = now
        self._next_visit = now.replace(hour=9, minute=0, second=0, microsecond=0)
        self._tested = None

    def _draw_odd(self) -> Odd | None:
        draw, rates = self._odd.random(), self.odd_rates
        if draw < rates.damaged:
            return Odd.DAMAGED
        if draw < rates.damaged + rates.duplicate:
            return Odd.DUPLICATE
        return None

    def _reinitialise(self) -> None:
        for slot in self.slots.values():
            for pair in slot.groups():
                for counts in pair:
                    counts.count, counts.value = 0, Decimal(0)
            slot.sold_out_at, slot.selected_while_sold_out = None, 0
        self.reads = 0

    def _visit(self, at: datetime) -> None:
        """A driver's visit after the read: every slot refilled, one test vend."""
        for slot in self.slots.values():
            slot.level = slot.plan.capacity
        tested = self._rnd.choice(sorted(self.slots))
        slot = self.slots[tested]
        slot.level -= 1
        for counts in slot.test:
            counts.add(slot.plan.price)
        self._tested = tested  # the truth counts it at the next read, the first to show it
        days = self._rnd.choice(VISIT_EVERY_DAYS)
        self._next_visit = (at + timedelta(days=days)).replace(hour=9, minute=0, second=0)

    def _advance(self, until: datetime) -> None:
        while self.clock < until:
            step_end = min(self.clock + STEP, until)
            hours = (step_end - self.clock).total_seconds() / 3600
            weight = HOURLY[self.clock.hour] * (WEEKEND if self.clock.weekday() >= 5 else 1.0)
            for _ in range(_poisson(self._rnd, self.plan.rate_per_h * weight * hours)):
                self._customer(self.clock)
            self.clock = step_end

    def _customer(self, at: datetime) -> None:
        codes = list(self._weights)
        code = self._rnd.choices(codes, weights=[self._weights[c] for c in codes])[0]
        self._sell(code, at)

    def _sell(self, code: str, at: datetime) -> None:
        slot, truth = self.slots[code], self.truth[code]
        if slot.level <= 0:
            slot.selected_while_sold_out += 1
            return
        slot.level -= 1
        price = slot.plan.price
        if self._rnd.random() < FREE_VEND_RATE:
            for counts in slot.free:
                counts.add(price)
            truth.free_vends += 1
        else:
            cashless = self._rnd.random() < CASHLESS_SHARE
            for counts in slot.paid + (slot.cashless if cashless else slot.cash):
                counts.add(price)
            truth.units += 1
            truth.revenue += price
            if cashless:
                truth.cashless_units += 1
            else:
                truth.cash_units += 1
        if slot.level == 0:
            slot.sold_out_at = at

    def _audit(self, at: datetime, stamp: Callable[[datetime], datetime]) -> MachineAudit:
        selections = []
        for slot in self.slots.values():
            sold_out = None
            if slot.sold_out_at is not None:
                when = stamp(slot.sold_out_at)
                sold_out = SoldOut(when.date(), when.time(), slot.selected_while_sold_out)
            selections.append(
                Selection(
                    selection=slot.plan.slot,
                    price=slot.plan.price,
                    paid=_counter(slot.paid),
                    capacity=slot.plan.capacity,
                    par_level=slot.plan.capacity,
                    test=_counter(slot.test),
                    free=_counter(slot.free),
                    sold_out=sold_out,
                    cash=_counter(slot.cash),
                    cashless=_counter(slot.cashless),
                    current_level=slot.level,
                )
            )
        return MachineAudit(
            serial=self.plan.serial,
            model=self.plan.model,
            currency="EUR",
            selections=selections,
            read_at=stamp(at).replace(microsecond=0),
            reads=self.reads,
            reset_mode="AUTO",
        )


def _damage(data: bytes, rnd: random.Random) -> bytes:
    """The file with one digit of a PA2 line changed: intact to the eye, its CRC fails."""
    lines = data.split(b"\r\n")
    candidates = [i for i, line in enumerate(lines) if line.startswith(b"PA2*")]
    index = rnd.choice(candidates)
    line = bytearray(lines[index])
    digits = [i for i in range(4, len(line)) if chr(line[i]).isdigit()]
    at = rnd.choice(digits)
    line[at] = ord("0") + (line[at] - ord("0") + rnd.randint(1, 9)) % 10
    lines[index] = bytes(line)
    return b"\r\n".join(lines)


def fleet(
    count: int, *, start: datetime, seed: int = 0, odd: OddRates = OddRates()
) -> list[VendingMachine]:
    """Machines 1..count, each starting at `start`."""
    return [
        VendingMachine(machine_plan(i, seed), start=start, seed=seed, odd=odd)
        for i in range(1, count + 1)
    ]
