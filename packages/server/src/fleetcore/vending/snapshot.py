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


def counter_json(counter: Counter) -> CounterJson:
    """A parser counter as stored."""
    return [
        counter.count_init,
        _money(counter.value_init),
        counter.count_reset,
        _money(counter.value_reset),
    ]


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


def _by_payment(rows: tuple[PaymentBreakdown, ...]) -> dict[str, CounterJson] | None:
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
    return {"cash": counter_json(cash or none), "cashless": counter_json(cashless or none)}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def snapshot(audit: DexAudit) -> dict[str, Any]:
    """The counters accounting needs, as JSON (see the module docstring)."""
    cashless = _add(audit.cashless1 if _is_sent(audit.cashless1) else None, audit.cashless2)
    products: dict[str, Any] = {}
    for product in audit.products:
        sold_out = product.sold_out
        sold_out_at = None
        if sold_out is not None and sold_out.date is not None:
            sold_out_at = datetime.combine(sold_out.date, sold_out.time or datetime.min.time())
        # A selection repeated in one set (several price lines): the first one counts.
        products.setdefault(
            product.selection,
            {
                "price": _money(product.price),
                "name": product.name,
                "paid": counter_json(product.paid),
                "test": counter_json(product.test),
                "free": counter_json(product.free),
                "pay": _by_payment(product.by_payment),
                "level": product.current_level,
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
            "paid": counter_json(audit.paid),
            "test": counter_json(audit.test),
            "free": counter_json(audit.free),
            "cash": counter_json(audit.cash_sales),
            "cashless": counter_json(cashless) if _is_sent(cashless) else None,
        },
        "products": products,
    }


def warning_json(warning: DexWarning) -> dict[str, Any]:
    """A parser warning as stored on the audit."""
    return {
        "code": warning.code.value,
        "message": warning.message,
        "line": warning.line,
        "segment": warning.segment,
    }
