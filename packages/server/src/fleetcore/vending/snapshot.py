"""What accounting keeps of a parsed audit: its counters as JSON (Audit.summary).

Accounting works from this snapshot, not from the parser's objects, so an audit held as
damaged can be accounted when a manager accepts it, long after its upload. A counter is
the list [count_init, value_init, count_reset, value_reset]; money is a decimal string,
None means the file did not send the element (never zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fleetcore_protocol.dex.model import Audit as DexAudit
from fleetcore_protocol.dex.model import Counter, DexWarning, PaymentBreakdown

SNAPSHOT_VERSION = 1
CASH_DEVICES = frozenset({"CA"})  # PA702 payment devices taken as cash
CASHLESS_DEVICES = frozenset({"DA", "DB"})  # cashless 1 and 2; tokens (TA) are neither

CounterJson = list[Any]  # [count_init, value_init, count_reset, value_reset]

# What the tables can hold (Integer counts, Money of 1/10,000 in a BigInteger) with room to
# add intervals up; the parser takes up to 18 digits. A value beyond is dropped (None) with
# an OUT_OF_RANGE warning: a garbled element must not become a sale of billions.
MAX_COUNT = 100_000_000
MAX_MONEY = Decimal(10_000_000_000)
MAX_SLOT_LENGTH = 16


@dataclass(frozen=True, slots=True)
class Amounts:
    """A counter read back from a snapshot."""

    count_init: int | None = None
    value_init: Decimal | None = None
    count_reset: int | None = None
    value_reset: Decimal | None = None

    @property
    def has_init(self) -> bool:
        """True when the since-initialisation elements were sent."""
        return self.count_init is not None or self.value_init is not None

    @property
    def has_reset(self) -> bool:
        """True when the since-reset elements were sent."""
        return self.count_reset is not None or self.value_reset is not None


ZERO = Amounts(0, Decimal(0), 0, Decimal(0))


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class _Bounds:
    """Drops values out of range, remembering where (for the audit's warning)."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def count(self, value: int | None, where: str) -> int | None:
        if value is not None and not 0 <= value <= MAX_COUNT:
            self.dropped.append(where)
            return None
        return value

    def money(self, value: Decimal | None, where: str) -> str | None:
        if value is not None and not 0 <= value <= MAX_MONEY:
            self.dropped.append(where)
            return None
        return _money(value)

    def counter(self, counter: Counter, where: str) -> CounterJson:
        return [
            self.count(counter.count_init, where),
            self.money(counter.value_init, where),
            self.count(counter.count_reset, where),
            self.money(counter.value_reset, where),
        ]


def counter_json(counter: Counter) -> CounterJson:
    """A parser counter as stored (values out of range dropped)."""
    return _Bounds().counter(counter, "")


def amounts(raw: CounterJson | None) -> Amounts | None:
    """A stored counter read back (None when absent)."""
    if raw is None:
        return None
    count_init, value_init, count_reset, value_reset = raw
    return Amounts(
        count_init,
        None if value_init is None else Decimal(value_init),
        count_reset,
        None if value_reset is None else Decimal(value_reset),
    )


def _add(a: Counter | None, b: Counter) -> Counter:
    if a is None:
        return b

    def plus(x: Any, y: Any) -> Any:
        return y if x is None else x if y is None else x + y

    return Counter(
        value_init=plus(a.value_init, b.value_init),
        count_init=plus(a.count_init, b.count_init),
        value_reset=plus(a.value_reset, b.value_reset),
        count_reset=plus(a.count_reset, b.count_reset),
    )


def _is_sent(counter: Counter) -> bool:
    return any(
        v is not None
        for v in (counter.count_init, counter.value_init, counter.count_reset, counter.value_reset)
    )


def _by_payment(
    rows: tuple[PaymentBreakdown, ...], bounds: _Bounds, where: str
) -> dict[str, CounterJson] | None:
    if not rows:
        return None
    cash: Counter | None = None
    cashless: Counter | None = None
    for row in rows:
        device = row.device.strip().upper()
        if device in CASH_DEVICES:
            cash = _add(cash, row.counter)
        elif device in CASHLESS_DEVICES:
            cashless = _add(cashless, row.counter)
    none = Counter(value_init=Decimal(0), count_init=0, value_reset=Decimal(0), count_reset=0)
    return {
        "cash": bounds.counter(cash or none, where),
        "cashless": bounds.counter(cashless or none, where),
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def snapshot(audit: DexAudit) -> dict[str, Any]:
    """The counters accounting needs, as JSON (see the module docstring)."""
    bounds = _Bounds()
    cashless = _add(audit.cashless1 if _is_sent(audit.cashless1) else None, audit.cashless2)
    products: dict[str, Any] = {}
    for product in audit.products:
        sold_out = product.sold_out
        sold_out_at = None
        if sold_out is not None and sold_out.date is not None:
            sold_out_at = datetime.combine(sold_out.date, sold_out.time or datetime.min.time())
        code = product.selection.strip()
        if len(code) > MAX_SLOT_LENGTH:  # slots are stored in String(16) columns
            bounds.dropped.append(f"PA101 {code[:40]} (cut to {MAX_SLOT_LENGTH} characters)")
            code = code[:MAX_SLOT_LENGTH]
        # A selection repeated in one set (several price lines): the first one counts.
        products.setdefault(
            code,
            {
                "price": bounds.money(product.price, f"PA1 {product.selection}"),
                "name": product.name,
                "paid": bounds.counter(product.paid, f"PA2 {product.selection}"),
                "test": bounds.counter(product.test, f"PA3 {product.selection}"),
                "free": bounds.counter(product.free, f"PA4 {product.selection}"),
                "pay": _by_payment(product.by_payment, bounds, f"PA7 {product.selection}"),
                "level": bounds.count(product.current_level, f"PA1 {product.selection}"),
                "sold_out_at": _iso(sold_out_at),
            },
        )
    mode = (audit.reset_mode or "AUTO").strip().upper() or "AUTO"
    return {
        "v": SNAPSHOT_VERSION,
        "serial": audit.machine.serial,
        "model": audit.machine.model,
        "currency": audit.currency.alpha_code,
        "reset_mode": mode,
        "machine": {
            "paid": bounds.counter(audit.paid, "VA1"),
            "test": bounds.counter(audit.test, "VA2"),
            "free": bounds.counter(audit.free, "VA3"),
            "cash": bounds.counter(audit.cash_sales, "CA2"),
            "cashless": bounds.counter(cashless, "DA2") if _is_sent(cashless) else None,
        },
        "products": products,
        "out_of_range": sorted(set(bounds.dropped)),
    }


def warning_json(warning: DexWarning) -> dict[str, Any]:
    """A parser warning as stored on the audit."""
    return {
        "code": warning.code.value,
        "message": warning.message,
        "line": warning.line,
        "segment": warning.segment,
    }
