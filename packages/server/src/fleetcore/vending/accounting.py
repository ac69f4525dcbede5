"""Sales between two consecutive accounted audits of a machine: pure arithmetic on snapshots.

The rules (each a decision; tests/test_vending_accounting.py holds them to it):

- Counters since initialisation are the source of truth: an interval's sales are the
  current value less the previous audit's. A gap (an audit missing in between) needs
  nothing special: the difference covers the whole interval since the previous accounted
  read. A selection absent from the previous audit counts from zero (it was configured
  since, and a new selection's counters start at zero).
- Re-initialisation: when the machine's paid vends since initialisation (VA101/VA102) or
  any selection's (PA201/PA202) go down, the machine was re-initialised in between; the
  current values are the sales since then (basis "reinitialised"), with a warning. What
  sold between the previous read and the re-initialisation is lost: no counter has it.
- Since-reset counters are used only when the since-initialisation ones are absent (some
  machines send no others; the choice is made per counter, as a machine may send VA1 since
  initialisation and its selections since reset only). When the previous read reset them
  (its SD105 mode AUTO, the default, or RESET) the current values are exactly the
  interval's sales; after a SAVE read they accumulate, so the interval is the difference
  (a value going down: someone reset the machine by hand, the current value is what sold
  since). Basis "reset".
- The first audit of a machine (no previous) only establishes the baseline: no sales. Its
  since-reset values may describe the interval before it, but that interval has no known
  start, and the rule stays the same for every kind of machine.
- Cash and cashless: from PA7 where the selection has it; otherwise the selection's
  revenue and units are split in the proportion of the machine's cash (CA2) and cashless
  (DA2 + DB2) sales of the interval, an estimate (units rounded half even, the rest
  cashless); without either, both stay zero (unsplit).
- Revenue without a value element: units x the selection's price (PA102) when known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, TypeVar

from fleetcore.vending.snapshot import MAX_MONEY, ZERO, Amounts, amounts

BASELINE = "baseline"  # the first audit of a machine: no Sale rows
INIT = "init"
RESET = "reset"
REINITIALISED = "reinitialised"
_CENT = Decimal("0.0001")  # Money's resolution


@dataclass(frozen=True, slots=True)
class SlotSales:
    """One selection's sales in one interval."""

    slot: str
    basis: str  # init | reset | reinitialised: how its paid vends were counted
    units: int = 0
    revenue: Decimal = Decimal(0)
    cash_units: int = 0
    cash_revenue: Decimal = Decimal(0)
    cashless_units: int = 0
    cashless_revenue: Decimal = Decimal(0)
    test_vends: int = 0
    free_vends: int = 0


@dataclass(frozen=True, slots=True)
class Totals:
    """A machine's sales in one interval."""

    units: int = 0
    revenue: Decimal = Decimal(0)
    cash_revenue: Decimal = Decimal(0)
    cashless_revenue: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        """As stored in the audit's summary."""
        return {
            "units": self.units,
            "revenue": str(self.revenue),
            "cash_revenue": str(self.cash_revenue),
            "cashless_revenue": str(self.cashless_revenue),
        }


@dataclass(frozen=True, slots=True)
class Interval:
    """What an audit adds to its machine's sales, against the previous accounted one."""

    basis: str  # the audit's: reinitialised or init when any selection was, else reset
    slots: tuple[SlotSales, ...] = ()
    totals: Totals = field(default_factory=Totals)
    warnings: tuple[dict[str, Any], ...] = ()


def _has_init(summary: Mapping[str, Any]) -> bool:
    machine = amounts(summary["machine"]["paid"])
    if machine is not None and machine.has_init:
        return True
    return any(
        (a := amounts(p["paid"])) is not None and a.has_init for p in summary["products"].values()
    )


def _went_down(previous: Amounts | None, current: Amounts | None) -> bool:
    if previous is None or current is None:
        return False
    pairs = ((previous.count_init, current.count_init), (previous.value_init, current.value_init))
    return any(p is not None and c is not None and c < p for p, c in pairs)


def _reinitialised(previous: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    if _went_down(amounts(previous["machine"]["paid"]), amounts(current["machine"]["paid"])):
        return True
    before = previous["products"]
    return any(
        _went_down(amounts(before[slot]["paid"]), amounts(p["paid"]))
        for slot, p in current["products"].items()
        if slot in before
    )


class _Taker:
    """Interval amounts of one counter: since initialisation when both reads have them,
    else since reset (see the module docstring); each answer names its basis."""

    def __init__(self, *, reinitialised: bool, previous_cleared: bool) -> None:
        self.reinitialised = reinitialised
        self.previous_cleared = previous_cleared

    def take(
        self, previous: Amounts | None, current: Amounts | None
    ) -> tuple[int | None, Decimal | None, str | None]:
        if current is None:
            return None, None, None
        if current.has_init and self.reinitialised:
            return current.count_init, current.value_init, REINITIALISED
        if current.has_init and (previous is None or previous.has_init):
            before = previous or ZERO
            return (
                _difference(before.count_init, current.count_init),
                _difference(before.value_init, current.value_init),
                INIT,
            )
        if not current.has_reset:
            return None, None, None
        if self.previous_cleared or previous is None:
            return current.count_reset, current.value_reset, RESET
        return (
            _difference(previous.count_reset, current.count_reset),
            _difference(previous.value_reset, current.value_reset),
            RESET,
        )


_N = TypeVar("_N", int, Decimal)


def _difference(before: _N | None, now: _N | None) -> _N | None:
    if now is None:
        return None
    if before is None:
        return now
    # A single counter going down while the machine's did not: it was reset on its own
    # (a selection cleared in service mode); what it shows now sold since.
    return now - before if now >= before else now


def _revenue(units: int, value: Decimal | None, price: str | None) -> Decimal:
    if value is not None:
        return value
    # Both are bounded (snapshot), their product is not: held within what Money stores.
    return min(units * Decimal(price), MAX_MONEY) if price is not None else Decimal(0)


def _split(units: int, revenue: Decimal, share: Decimal) -> tuple[int, Decimal, int, Decimal]:
    cash_units = int((units * share).to_integral_value(ROUND_HALF_EVEN))
    cash_revenue = (revenue * share).quantize(_CENT, ROUND_HALF_EVEN)
    return cash_units, cash_revenue, units - cash_units, revenue - cash_revenue


def _machine_share(
    taker: _Taker, previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> Decimal | None:
    def value(name: str) -> Decimal:
        before = amounts(previous["machine"][name]) if previous else None
        _, taken, _ = taker.take(before, amounts(current["machine"][name]))
        return taken or Decimal(0)

    cash, cashless = value("cash"), value("cashless")
    if cash + cashless <= 0:
        return None
    return cash / (cash + cashless)


def _slot_sales(
    taker: _Taker,
    slot: str,
    before: Mapping[str, Any] | None,
    now: Mapping[str, Any],
    share: Decimal | None,
) -> SlotSales:
    def counter(name: str) -> tuple[Amounts | None, Amounts | None]:
        return (amounts(before[name]) if before else None), amounts(now[name])

    units, value, basis = taker.take(*counter("paid"))
    units = units or 0
    revenue = _revenue(units, value, now.get("price"))
    test, _, _ = taker.take(*counter("test"))
    free, _, _ = taker.take(*counter("free"))
    split = (0, Decimal(0), 0, Decimal(0))
    if now.get("pay"):
        previous_pay = (before or {}).get("pay") or {}
        parts = []
        for kind in ("cash", "cashless"):
            n, v, _ = taker.take(amounts(previous_pay.get(kind)), amounts(now["pay"][kind]))
            parts.append((n or 0, _revenue(n or 0, v, now.get("price"))))
        split = (parts[0][0], parts[0][1], parts[1][0], parts[1][1])
    elif share is not None:
        split = _split(units, revenue, share)
    return SlotSales(
        slot,
        basis or INIT,
        units,
        revenue,
        *split,
        test_vends=test or 0,
        free_vends=free or 0,
    )


def _totals(
    taker: _Taker,
    slots: tuple[SlotSales, ...],
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
) -> Totals:
    if slots:
        return Totals(
            units=sum(s.units for s in slots),
            revenue=sum((s.revenue for s in slots), Decimal(0)),
            cash_revenue=sum((s.cash_revenue for s in slots), Decimal(0)),
            cashless_revenue=sum((s.cashless_revenue for s in slots), Decimal(0)),
        )
    # No per-selection records: the machine's own totals (VA1, CA2, DA2 + DB2).
    machine, before = current["machine"], previous["machine"]
    units, revenue, _ = taker.take(amounts(before["paid"]), amounts(machine["paid"]))
    _, cash, _ = taker.take(amounts(before["cash"]), amounts(machine["cash"]))
    _, cashless, _ = taker.take(amounts(before["cashless"]), amounts(machine["cashless"]))
    return Totals(units or 0, revenue or Decimal(0), cash or Decimal(0), cashless or Decimal(0))


def compute_interval(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> Interval:
    """The sales `current` adds to its machine against `previous` (None: the first)."""
    if previous is None:
        return Interval(BASELINE)
    warnings: list[dict[str, Any]] = []
    reinitialised = _reinitialised(previous, current)
    if reinitialised:
        warnings.append(
            {
                "code": "REINITIALISED",
                "message": "counters since initialisation went down: the machine was "
                "re-initialised; this audit's values are the sales since then",
            }
        )
    cleared = previous.get("reset_mode", "AUTO") in ("AUTO", "RESET")
    taker = _Taker(reinitialised=reinitialised, previous_cleared=cleared)
    share = _machine_share(taker, previous, current)
    before = previous["products"]
    slots = tuple(
        _slot_sales(taker, slot, before.get(slot), now, share)
        for slot, now in sorted(current["products"].items())
    )
    bases = {s.basis for s in slots}
    if not slots:
        _, _, machine_basis = taker.take(
            amounts(previous["machine"]["paid"]), amounts(current["machine"]["paid"])
        )
        bases = {machine_basis or INIT}
    basis = next((b for b in (REINITIALISED, INIT) if b in bases), RESET)
    return Interval(basis, slots, _totals(taker, slots, previous, current), tuple(warnings))
