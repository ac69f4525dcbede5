"""Accounting between consecutive audits: pure rules on audits built directly, no database."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

from fleetcore.vending.accounting import (
    BASELINE,
    INIT,
    REINITIALISED,
    RESET,
    SlotSales,
    compute_interval,
)
from fleetcore.vending.series import slot_key
from fleetcore.vending.snapshot import snapshot
from fleetcore_protocol.dex.model import (
    Audit,
    Counter,
    Identity,
    PaymentBreakdown,
    Product,
    ReadInfo,
)

D = Decimal


def _init(count: int, value: str) -> Counter:
    return Counter(value_init=D(value), count_init=count)


def _reset(count: int, value: str) -> Counter:
    return Counter(value_reset=D(value), count_reset=count)


def _audit(
    products: dict[str, Counter],
    *,
    price: str = "1.50",
    machine: Counter | None = None,
    cash: Counter | None = None,
    cashless: Counter | None = None,
    mode: str | None = None,
    pa7: dict[str, tuple[Counter, Counter]] | None = None,
    test: dict[str, Counter] | None = None,
) -> dict[str, Any]:
    rows = tuple(
        Product(
            line=i,
            selection=slot,
            price=D(price),
            paid=counter,
            test=(test or {}).get(slot, Counter()),
            by_payment=(
                (
                    PaymentBreakdown("CA", None, D(price), pa7[slot][0]),
                    PaymentBreakdown("DA", None, D(price), pa7[slot][1]),
                )
                if pa7 and slot in pa7
                else ()
            ),
        )
        for i, (slot, counter) in enumerate(products.items())
    )
    audit = Audit(
        control_number="0001",
        first_line=1,
        machine=Identity("ID1", serial="SN1"),
        paid=machine or Counter(),
        cash_sales=cash or Counter(),
        cashless1=cashless or Counter(),
        products=rows,
        reset_mode=mode,
        read=ReadInfo(read_at=datetime(2026, 12, 1, 8, 0)),
    )
    return snapshot(audit)


def _by_slot(slots: tuple[SlotSales, ...]) -> dict[str, tuple[int, Decimal]]:
    return {s.slot: (s.units, s.revenue) for s in slots}


def test_the_first_audit_is_a_baseline_without_sales() -> None:
    interval = compute_interval(None, _audit({"A1": _init(10, "15.00")}))
    assert interval.basis == BASELINE
    assert interval.slots == ()
    assert interval.totals.units == 0


def test_counters_since_initialisation_give_the_difference() -> None:
    first = _audit({"A1": _init(10, "15.00"), "A2": _init(4, "8.00")})
    second = _audit({"A1": _init(13, "19.50"), "A2": _init(4, "8.00"), "B1": _init(2, "3.00")})
    interval = compute_interval(first, second)
    assert interval.basis == INIT
    # B1 is new since the previous read: its counters start from zero.
    assert _by_slot(interval.slots) == {
        "A1": (3, D("4.50")),
        "A2": (0, D("0.00")),
        "B1": (2, D("3.00")),
    }
    assert (interval.totals.units, interval.totals.revenue) == (5, D("7.50"))


def test_a_gap_is_covered_by_the_difference_with_the_last_accounted_audit() -> None:
    reads = [_audit({"A1": _init(n, f"{n * 1.5:.2f}")}) for n in (10, 14, 20)]
    # The middle audit never arrived: the last against the first covers both intervals.
    gap = compute_interval(reads[0], reads[2])
    step = [compute_interval(reads[0], reads[1]), compute_interval(reads[1], reads[2])]
    assert gap.totals.units == sum(i.totals.units for i in step) == 10
    assert gap.totals.revenue == D("15.00")


def test_reinitialisation_takes_the_current_values_and_warns() -> None:
    before = _audit({"A1": _init(100, "150.00"), "A2": _init(50, "75.00")})
    after = _audit({"A1": _init(3, "4.50"), "A2": _init(60, "90.00")})
    interval = compute_interval(before, after)
    assert interval.basis == REINITIALISED
    # Every selection counts from the re-initialisation, even one that went up.
    assert _by_slot(interval.slots) == {"A1": (3, D("4.50")), "A2": (60, D("90.00"))}
    assert [w["code"] for w in interval.warnings] == ["REINITIALISED"]


def test_auto_reset_reads_take_the_since_reset_values() -> None:
    reads = [
        _audit({"A1": _reset(4, "6.00")}),
        _audit({"A1": _reset(2, "3.00")}),  # the read before reset the counters
        _audit({"A1": _reset(7, "10.50")}, mode="AUTO"),
    ]
    intervals = [compute_interval(a, b) for a, b in itertools.pairwise(reads)]
    assert [i.basis for i in intervals] == [RESET, RESET]
    assert [_by_slot(i.slots)["A1"] for i in intervals] == [(2, D("3.00")), (7, D("10.50"))]


def test_after_a_save_read_since_reset_counters_accumulate() -> None:
    saved = _audit({"A1": _reset(4, "6.00")}, mode="SAVE")
    later = _audit({"A1": _reset(9, "13.50")}, mode="SAVE")
    assert _by_slot(compute_interval(saved, later).slots)["A1"] == (5, D("7.50"))
    # Reset by hand in between: what it shows now is what sold since.
    by_hand = _audit({"A1": _reset(2, "3.00")}, mode="SAVE")
    assert _by_slot(compute_interval(later, by_hand).slots)["A1"] == (2, D("3.00"))


def test_init_counters_win_over_since_reset_ones() -> None:
    both = Counter(value_init=D("15.00"), count_init=10, value_reset=D("3.00"), count_reset=2)
    more = Counter(value_init=D("18.00"), count_init=12, value_reset=D("3.00"), count_reset=2)
    interval = compute_interval(_audit({"A1": both}), _audit({"A1": more}))
    assert interval.basis == INIT
    assert _by_slot(interval.slots)["A1"] == (2, D("3.00"))


def test_pa7_splits_cash_and_cashless_per_selection() -> None:
    first = _audit({"A1": _init(10, "15.00")}, pa7={"A1": (_init(6, "9.00"), _init(4, "6.00"))})
    second = _audit({"A1": _init(15, "22.50")}, pa7={"A1": (_init(7, "10.50"), _init(8, "12.00"))})
    (a1,) = compute_interval(first, second).slots
    assert (a1.cash_units, a1.cash_revenue) == (1, D("1.50"))
    assert (a1.cashless_units, a1.cashless_revenue) == (4, D("6.00"))


def test_without_pa7_the_machine_cash_share_splits_each_selection() -> None:
    first = _audit(
        {"A1": _init(0, "0.00"), "A2": _init(0, "0.00")},
        cash=_init(0, "0.00"),
        cashless=_init(0, "0.00"),
    )
    second = _audit(
        {"A1": _init(4, "6.00"), "A2": _init(4, "6.00")},
        cash=_init(6, "9.00"),  # three quarters of the interval's money came in cash
        cashless=_init(2, "3.00"),
    )
    interval = compute_interval(first, second)
    for slot in interval.slots:
        assert (slot.cash_units, slot.cash_revenue) == (3, D("4.5000"))
        assert (slot.cashless_units, slot.cashless_revenue) == (1, D("1.5000"))
    assert interval.totals.cash_revenue == D("9.00")
    # Neither CA2 nor DA2 sent: left unsplit.
    plain = compute_interval(_audit({"A1": _init(0, "0")}), _audit({"A1": _init(2, "3.00")}))
    assert (plain.slots[0].cash_units, plain.slots[0].cashless_units) == (0, 0)


def test_count_without_value_is_priced_and_test_vends_are_counted() -> None:
    first = _audit({"A1": Counter(count_init=5)}, price="2.00", test={"A1": Counter(count_init=1)})
    second = _audit({"A1": Counter(count_init=8)}, price="2.00", test={"A1": Counter(count_init=3)})
    (a1,) = compute_interval(first, second).slots
    assert (a1.units, a1.revenue, a1.test_vends) == (3, D("6.00"), 2)


def test_machine_totals_without_selections() -> None:
    first = _audit({}, machine=_init(10, "15.00"))
    second = _audit({}, machine=_init(16, "24.00"))
    totals = compute_interval(first, second).totals
    assert (totals.units, totals.revenue) == (6, D("9.00"))


def test_slot_codes_become_valid_telemetry_keys() -> None:
    from fleetcore_protocol.telemetry import _KEY

    for code, key in [("A1", "A1"), ("A 1", "A_1"), ("1.2", "1_2"), ("é#", "__"), ("", "_")]:
        assert slot_key(code) == key
        assert _KEY.fullmatch(f"sales.{slot_key(code)}")


def test_selections_since_reset_only_under_machine_totals_since_initialisation() -> None:
    # As dex3.dex: VA1 has both, the PA2 records only since-reset values.
    first = _audit({"A1": _reset(4, "6.00")}, machine=_init(100, "150.00"))
    second = _audit({"A1": _reset(3, "4.50")}, machine=_init(103, "154.50"))
    interval = compute_interval(first, second)
    assert interval.basis == RESET
    assert [(s.slot, s.basis, s.units, s.revenue) for s in interval.slots] == [
        ("A1", RESET, 3, D("4.50"))
    ]


def test_values_no_machine_could_count_are_dropped_not_accounted() -> None:
    huge = Counter(value_init=D(10) ** 17, count_init=10**17)
    summary = _audit({"A1": huge, "A2": _init(3, "4.50")})
    assert summary["out_of_range"] == ["PA2 A1"]
    assert summary["products"]["A1"]["paid"] == [None, None, None, None]
    interval = compute_interval(_audit({"A1": _init(1, "1.50"), "A2": _init(1, "1.50")}), summary)
    assert _by_slot(interval.slots) == {"A1": (0, D(0)), "A2": (2, D("3.00"))}
