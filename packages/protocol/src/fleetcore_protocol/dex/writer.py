"""Well-formed DEX/EVA-DTS audit files, for tests and the device simulator.

`write(MachineAudit(...))` gives the bytes a vending machine's audit module would send:
DXS, one ST..SE set per audit (ID1, ID4, ID5, VA1-VA3, CA2, DA2, a PA1 group per
selection, EA3, SD1), a G85 CRC and an SE count that the parser accepts, and DXE. Totals
(VA1, VA2, VA3, CA2, DA2) are the sums of the selections' counters. Invalid input (money
with more decimals than the audit's decimal places, a non-Latin-1 name) raises ValueError:
this is a test tool, and a wrong file written silently would test nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Literal

from fleetcore_protocol.dex.lexer import crc16_arc, escape
from fleetcore_protocol.dex.model import Counter, SoldOut
from fleetcore_protocol.dex.segments import CURRENCIES

_NUMERIC = {alpha: numeric for numeric, alpha in CURRENCIES.items()}


@dataclass(frozen=True, slots=True)
class Selection:
    """One PA1 group: a selection's price and its counters (value in currency units)."""

    selection: str  # PA101, 1-6 characters
    price: Decimal
    paid: Counter = field(default_factory=Counter)  # PA2 01-04
    name: str | None = None  # PA103
    capacity: int | None = None  # PA104
    par_level: int | None = None  # PA105
    test: Counter | None = None  # PA3
    free: Counter | None = None  # PA4
    sold_out: SoldOut | None = None  # PA5
    cash: Counter | None = None  # PA7 by cash (CA), summed into CA2
    cashless: Counter | None = None  # PA7 by cashless 1 (DA), summed into DA2
    current_level: int | None = None  # PA108: units in the slot, for machines that count them


@dataclass(frozen=True, slots=True)
class MachineAudit:
    """One ST set: the machine, its currency, its selections and this read."""

    serial: str  # ID101
    model: str | None = None  # ID102
    decimal_places: int = 2  # ID401
    currency: str | None = "EUR"  # ID403; ID402 is derived for the common currencies
    selections: Sequence[Selection] = ()
    read_at: datetime | None = None  # ID5 and EA302/EA303
    reads: int | None = None  # EA301 reads with reset since initialisation
    reset_mode: Literal["AUTO", "SAVE", "RESET"] | None = None  # SD105


def write(
    audits: MachineAudit | Sequence[MachineAudit],
    *,
    sender: str = "FLC0000001",
    line_end: Literal["\r\n", "\n"] = "\r\n",
    crc_order: Literal["msb_first", "lsb_first"] = "msb_first",
) -> bytes:
    """A DEX file with one ST set per audit, each with a correct G85 and SE count."""
    items = [audits] if isinstance(audits, MachineAudit) else list(audits)
    out = [_line("DXS", sender, "VA", "V0/6", "1")]
    for number, audit in enumerate(items, start=1):
        control = f"{number:04d}"
        body = [_line("ST", "001", control), *_segments(audit)]
        crc = crc16_arc("".join(line + "\r\n" for line in body).encode("latin-1"))
        high, low = crc >> 8, crc & 0xFF
        g85 = f"{high:02X}{low:02X}" if crc_order == "msb_first" else f"{low:02X}{high:02X}"
        out += [*body, _line("G85", g85), _line("SE", str(len(body) + 2), control)]
    out.append(_line("DXE", "1", str(len(items))))
    return "".join(line + line_end for line in out).encode("latin-1")


def _line(segment: str, *elements: str | None) -> str:
    values = ["" if e is None else e for e in elements]
    while values and values[-1] == "":
        values.pop()  # trailing empty elements are left off (EVA-DTS p.20)
    return "*".join([segment, *values])


def _text(value: str | None) -> str | None:
    return None if value is None else escape(value)


def _int(value: int | None) -> str | None:
    if value is not None and value < 0:
        raise ValueError(f"DEX counts are not negative: {value}")
    return None if value is None else str(value)


def _money(value: Decimal | None, places: int) -> str | None:
    if value is None:
        return None
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value() or scaled < 0:
        raise ValueError(f"{value} is not a non-negative amount with {places} decimal places")
    return str(int(scaled))


def _date(value: date) -> str:
    return f"{value.year:04d}{value.month:02d}{value.day:02d}"


def _time(value: time | datetime) -> str:
    return f"{value.hour:02d}{value.minute:02d}{value.second:02d}"


def _value_first(counter: Counter, places: int) -> list[str | None]:
    return [
        _money(counter.value_init, places),
        _int(counter.count_init),
        _money(counter.value_reset, places),
        _int(counter.count_reset),
    ]


def _count_first(counter: Counter, places: int) -> list[str | None]:
    return [
        _int(counter.count_init),
        _money(counter.value_init, places),
        _int(counter.count_reset),
        _money(counter.value_reset, places),
    ]


def total(counters: Iterable[Counter | None]) -> Counter:
    """The sum of counters, element by element (None where no counter sends it)."""

    def add(values: list[int | Decimal | None]) -> int | Decimal | None:
        present = [v for v in values if v is not None]
        return sum(present[1:], present[0]) if present else None

    items = [c for c in counters if c is not None]
    value_init = add([c.value_init for c in items])
    value_reset = add([c.value_reset for c in items])
    count_init = add([c.count_init for c in items])
    count_reset = add([c.count_reset for c in items])
    return Counter(
        value_init=None if value_init is None else Decimal(value_init),
        count_init=None if count_init is None else int(count_init),
        value_reset=None if value_reset is None else Decimal(value_reset),
        count_reset=None if count_reset is None else int(count_reset),
    )


def _segments(audit: MachineAudit) -> list[str]:
    places = audit.decimal_places
    if not 0 <= places <= 4:
        raise ValueError("decimal_places must be 0-4")
    currency = audit.currency
    if currency is not None and not (
        len(currency) == 3 and currency.isascii() and currency.isalpha()
    ):
        raise ValueError(f"currency must be an ISO 4217 alphabetic code, not {currency!r}")
    lines = [
        _line("ID1", _text(audit.serial), _text(audit.model)),
        _line("ID4", str(places), _NUMERIC.get(currency or ""), currency),
    ]
    if audit.read_at is not None:
        lines.append(_line("ID5", _date(audit.read_at), _time(audit.read_at)))
    selections = audit.selections
    lines.append(_line("VA1", *_value_first(total(s.paid for s in selections), places)))
    for name, counters in (
        ("VA2", [s.test for s in selections]),
        ("VA3", [s.free for s in selections]),
        ("CA2", [s.cash for s in selections]),
        ("DA2", [s.cashless for s in selections]),
    ):
        if any(c is not None for c in counters):
            lines.append(_line(name, *_value_first(total(counters), places)))
    for s in selections:
        lines += _product(s, places)
    if audit.read_at is not None or audit.reads is not None:
        at = audit.read_at
        lines.append(
            _line(
                "EA3",
                _int(audit.reads),
                None if at is None else _date(at),
                None if at is None else _time(at),
            )
        )
    if audit.reset_mode is not None:
        lines.append(_line("SD1", None, None, None, None, audit.reset_mode))
    return lines


def _product(s: Selection, places: int) -> list[str]:
    code = _text(s.selection.strip())
    lines = [
        _line(
            "PA1",
            code,
            _money(s.price, places),
            _text(s.name),
            _int(s.capacity),
            _int(s.par_level),
            None,  # PA106 dispensed quantity
            None,  # PA107 mechanism status
            _int(s.current_level),
        ),
        _line("PA2", *_count_first(s.paid, places)),
    ]
    if s.test is not None:
        lines.append(_line("PA3", *_count_first(s.test, places)))
    if s.free is not None:
        lines.append(_line("PA4", *_count_first(s.free, places)))
    if s.sold_out is not None:
        day, clock = s.sold_out.date, s.sold_out.time
        lines.append(
            _line(
                "PA5",
                None if day is None else _date(day),
                None if clock is None else _time(clock),
                _int(s.sold_out.selected_while_sold_out),
            )
        )
    for device, counter in (("CA", s.cash), ("DA", s.cashless)):
        if counter is not None:
            lines.append(
                _line(
                    "PA7",
                    code,
                    device,
                    "0",
                    _money(s.price, places),
                    *_count_first(counter, places),
                )
            )
    return lines
