"""The data segments of one ST set into an Audit's values (framing is parser.py's job)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetcore_protocol.dex.lexer import Segment
from fleetcore_protocol.dex.model import (
    CashFlow,
    Counter,
    Currency,
    Event,
    Identity,
    PaymentBreakdown,
    PriceLine,
    Product,
    RawSegment,
    ReadInfo,
    SoldOut,
    WarningCode,
)
from fleetcore_protocol.dex.values import Fields, Warnings, scale

# ID402 with a leading 1 is ISO 4217 numeric + 1000; the currencies vending fleets use.
CURRENCIES = {
    "1978": "EUR",
    "1840": "USD",
    "1826": "GBP",
    "1756": "CHF",
    "1752": "SEK",
    "1208": "DKK",
    "1578": "NOK",
    "1985": "PLN",
    "1203": "CZK",
    "1348": "HUF",
    "1036": "AUD",
    "1124": "CAD",
}
PARTS = ("CB1", "CA1", "BA1", "DA1", "DB1", "TA1", "AM1", "FA1")
LOOP_MARKERS = ("LS", "LE")
# Block families of the EVA-DTS dictionary: kept as RawSegment without a warning when this
# parser does not read them (CA15, TA2, EA6, MA5 ...). Anything else (EA250705, EADXS) is an
# UNKNOWN_SEGMENT.
_STANDARD = re.compile(
    r"(AC|AM|BA|BC|BL|CA|CB|CM|DA|DB|DC|EA|FA|GA|IC|ID|LA|MA|MC|MR|PA|PC|PP|SA|SD|SR|TA|VA|XA)"
    r"(?:[1-9]|1[0-9]|20)"
)
# Segments that may sit inside a PA1 group without ending it: events, loop markers, vendor
# data (test2.dex has EA2 lines between a product's PA5 and the next PA1).
_GROUP_NEUTRAL = frozenset({"EA1", "EA2", "LS", "LE", "MA5"})
MAX_DECIMAL_PLACES = 4  # Money is stored in 1/10,000 units
# Real machines send at most a few hundred selections, events and price lines; these bounds
# keep a pathological file (a megabyte of "PA1*1") from costing seconds of object building.
MAX_ITEMS = 10_000


def counter_value_first(f: Fields, first: int = 1) -> Counter:
    """The totals pattern (VA1, CA2, DA2): value, number since init; value, number since reset."""
    return Counter(f.money(first), f.count(first + 1), f.money(first + 2), f.count(first + 3))


def counter_count_first(f: Fields, first: int = 1) -> Counter:
    """The product pattern (PA2, PA3, PA4, PA7, PA8): number, value since init; then reset."""
    return Counter(
        value_init=f.money(first + 1),
        count_init=f.count(first),
        value_reset=f.money(first + 3),
        count_reset=f.count(first + 2),
    )


@dataclass(slots=True)
class _Draft:
    fields: dict[str, Any]
    by_payment: list[PaymentBreakdown] = field(default_factory=list)


class AuditBuilder:
    """Reads the data segments of one set; `values()` gives the Audit's keyword arguments."""

    def __init__(self, warnings: Warnings) -> None:
        self.warnings = warnings
        self.currency = Currency()
        self.values: dict[str, Any] = {}
        self.parts: list[Identity] = []
        self.products: list[_Draft] = []
        self.current: _Draft | None = None
        self.price_lines: list[PriceLine] = []
        self.events: list[Event] = []
        self.raw: list[RawSegment] = []
        self.ca3: Fields | None = None
        self.ca4: Fields | None = None
        self.handlers: dict[str, Callable[[Fields], None]] = {
            "ID1": self._id1,
            "ID5": self._id5,
            "VA1": lambda f: self._total("paid", f),
            "VA2": lambda f: self._total("test", f),
            "VA3": lambda f: self._total("free", f),
            "CA2": lambda f: self._total("cash_sales", f),
            "DA2": lambda f: self._total("cashless1", f),
            "DB2": lambda f: self._total("cashless2", f),
            "CA3": self._ca3,
            "CA4": self._ca4,
            "PA1": self._pa1,
            "PA2": self._pa2,
            "PA3": lambda f: self._product_counter("test", f),
            "PA4": lambda f: self._product_counter("free", f),
            "PA5": self._pa5,
            "PA7": self._pa7,
            "PA8": self._pa8,
            "LA1": self._la1,
            "EA1": self._ea1,
            "EA2": self._ea2,
            "EA3": self._ea3,
            "SD1": self._sd1,
        }
        for part in PARTS:
            self.handlers[part] = self._part

    def fields(self, segment: Segment) -> Fields:
        """The segment's elements, money read with this set's decimal places."""
        return Fields(segment, self.warnings, self.currency.decimal_places)

    def read_currency(self, segment: Segment) -> None:
        """ID4, read before the other segments so money anywhere in the set is scaled by it."""
        f = Fields(segment, self.warnings)
        places = f.count(1)
        if places is not None and places > MAX_DECIMAL_PLACES:
            f.bad(1, str(places), f"0-{MAX_DECIMAL_PLACES} decimal places")
            places = None
        numeric = f.text(2)
        alpha = f.text(3)
        if alpha is not None and not (len(alpha) == 3 and alpha.isascii() and alpha.isalpha()):
            f.bad(3, alpha, "an ISO 4217 alphabetic code")
            alpha = None
        if alpha is None and numeric is not None:
            alpha = CURRENCIES.get(numeric)
        self.currency = Currency(2 if places is None else places, numeric, alpha and alpha.upper())

    def add(self, segment: Segment) -> None:
        """Read one data segment of the set (not ST, SE, G85 or ID4)."""
        sid = segment.id
        if self.current is not None and not sid.startswith("PA") and sid not in _GROUP_NEUTRAL:
            self.current = None
        handler = self.handlers.get(sid)
        if handler is not None:
            handler(self.fields(segment))
            return
        self.raw.append(RawSegment(segment.line, sid, segment.elements))
        if sid not in LOOP_MARKERS and not _STANDARD.fullmatch(sid):
            self.warnings.add(
                WarningCode.UNKNOWN_SEGMENT,
                f"unknown segment {sid[:20]!r} kept as written",
                segment.line,
                sid[:20],
            )

    # identification

    def _id1(self, f: Fields) -> None:
        texts = [f.text(k) for k in range(1, 9)]
        self.values["machine"] = Identity("ID1", *texts)

    def _part(self, f: Fields) -> None:
        serial, model, revision, user, asset = (f.text(k) for k in range(1, 6))
        self.parts.append(Identity(f.segment.id, serial, model, revision, user=user, asset=asset))

    def _id5(self, f: Fields) -> None:
        self.values["machine_time"] = f.moment(1, 2)

    # totals

    def _total(self, name: str, f: Fields) -> None:
        self.values[name] = counter_value_first(f)

    def _ca3(self, f: Fields) -> None:
        self.ca3 = f

    def _ca4(self, f: Fields) -> None:
        self.ca4 = f

    def cash_flow(self) -> CashFlow:
        """CA3 + CA4, with the CA304/CA308 unit decided (see `bills_whole_units`)."""
        places = self.currency.decimal_places
        values: dict[str, Any] = {}
        if self.ca4 is not None:
            f = self.ca4
            values.update(
                dispensed_reset=f.money(1),
                manually_dispensed_reset=f.money(2),
                dispensed_init=f.money(3),
                manually_dispensed_init=f.money(4),
            )
        if self.ca3 is None:
            return CashFlow(**values)
        f = self.ca3
        raw = {k: f.number(k) for k in range(1, 11)}
        whole = bills_whole_units(raw, places)
        for k, name in enumerate(
            (
                "cash_in",
                "to_cashbox",
                "to_tubes",
                "bills_in",
                "cash_in",
                "to_cashbox",
                "to_tubes",
                "bills_in",
            ),
            start=1,
        ):
            number = raw[k]
            suffix = "_reset" if k <= 4 else "_init"
            if number is not None and whole and name == "bills_in":
                values[name + suffix] = scale(number * 10**places, places)
            elif number is not None:
                values[name + suffix] = scale(number, places)
        return CashFlow(**values, bills_whole_units=whole)

    # products

    def _pa1(self, f: Fields) -> None:
        selection = f.text(1)
        if selection is None:
            f.bad(1, "", "a selection (PA101 is mandatory)")
            self.current = None
            return
        status = f.flag(7)
        draft = _Draft(
            {
                "line": f.segment.line,
                "selection": selection,
                "price": f.money(2),
                "name": f.text(3),
                "capacity": f.count(4),
                "par_level": f.count(5),
                "dispensed_quantity": f.count(6),
                "mechanism_missing": status is True,
                "current_level": f.count(8),
                "refill_level": f.count(9),
            }
        )
        self.current = draft  # over the bound: read, so PA2..PA8 attach, but not kept
        if self._room(self.products, f):
            self.products.append(draft)

    def _room(self, items: list[Any], f: Fields) -> bool:
        if len(items) < MAX_ITEMS:
            return True
        self.warnings.add(
            WarningCode.TOO_LARGE,
            f"more than {MAX_ITEMS} {f.segment.id} segments; the rest dropped",
            f.segment.line,
            f.segment.id,
        )
        return False

    def _draft(self, f: Fields) -> _Draft | None:
        if self.current is None:
            self.warnings.add(
                WarningCode.ORPHAN_SEGMENT,
                f"{f.segment.id} outside a PA1 group ignored",
                f.segment.line,
                f.segment.id,
            )
        return self.current

    def _pa2(self, f: Fields) -> None:
        if (draft := self._draft(f)) is None:
            return
        draft.fields["paid"] = counter_count_first(f)
        if len(f) > 4:
            draft.fields["discounted"] = counter_count_first(f, 5)
        if len(f) > 8:
            draft.fields["surcharged"] = counter_count_first(f, 9)

    def _product_counter(self, name: str, f: Fields) -> None:
        if (draft := self._draft(f)) is not None:
            draft.fields[name] = counter_count_first(f)

    def _pa5(self, f: Fields) -> None:
        if (draft := self._draft(f)) is not None:
            draft.fields["sold_out"] = SoldOut(f.date(1), f.time(2), f.count(3))

    def _pa7(self, f: Fields) -> None:
        if (draft := self._draft(f)) is None:
            return
        selection = f.text(1)
        if selection is not None and selection != draft.fields["selection"]:
            self.warnings.add(
                WarningCode.ORPHAN_SEGMENT,
                f"PA701 {selection[:20]!r} is not the group's PA101 "
                f"{draft.fields['selection']!r}; ignored",
                f.segment.line,
                "PA7",
            )
            return
        device = f.text(2) or ""
        draft.by_payment.append(
            PaymentBreakdown(device, f.text(3), f.money(4), counter_count_first(f, 5))
        )

    def _pa8(self, f: Fields) -> None:
        if (draft := self._draft(f)) is not None:
            draft.fields["mixed"] = counter_count_first(f)

    def _la1(self, f: Fields) -> None:
        selection = f.text(2)
        if selection is None:
            f.bad(2, "", "a product number (LA102 is mandatory)")
            return
        if not self._room(self.price_lines, f):
            return
        self.price_lines.append(
            PriceLine(f.text(1) or "", selection, f.money(3), f.count(4), f.count(5))
        )

    # events, reads, reset mode

    def _ea1(self, f: Fields) -> None:
        code = f.text(1)
        if code is None:
            return  # an empty EA1 (test.dex) says "no events"
        if not self._room(self.events, f):
            return
        self.events.append(
            Event("EA1", code, f.segment.line, at=f.moment(2, 3), duration_minutes=f.count(4))
        )

    def _ea2(self, f: Fields) -> None:
        code = f.text(1)
        if code is None or not self._room(self.events, f):
            return
        self.events.append(
            Event(
                "EA2",
                code,
                f.segment.line,
                count_reset=f.count(2),
                count_init=f.count(3),
                active=f.flag(5),
            )
        )

    def _ea3(self, f: Fields) -> None:
        self.values["read"] = ReadInfo(
            reads_with_reset_init=f.count(1),
            read_at=f.moment(2, 3),
            terminal=f.text(4),
            previous_read_at=f.moment(5, 6),
            previous_terminal=f.text(7),
            reads_init=f.count(9),
            resets_init=f.count(10),
        )

    def _sd1(self, f: Fields) -> None:
        mode = f.text(5)
        if mode is not None and mode.upper() not in ("AUTO", "SAVE", "RESET"):
            f.bad(5, mode, "AUTO, SAVE or RESET")
            mode = None
        self.values["reset_mode"] = mode and mode.upper()

    def result(self) -> dict[str, Any]:
        """The Audit keyword arguments gathered from the data segments."""
        products = tuple(Product(**d.fields, by_payment=tuple(d.by_payment)) for d in self.products)
        return {
            **self.values,
            "currency": self.currency,
            "parts": tuple(self.parts),
            "cash": self.cash_flow(),
            "products": products,
            "price_lines": tuple(self.price_lines),
            "events": tuple(self.events),
            "raw_segments": tuple(self.raw),
        }


def bills_whole_units(raw: dict[int, int | None], places: int) -> bool:
    """Whether CA304/CA308 (bills in) are whole currency units rather than Nc.

    EVA-DTS makes them Nc, but older North-American equipment sends whole dollars (p.221).
    Real devices tell which by the numbers themselves, so the rule is:
    1. with 0 decimal places the two readings are the same: Nc;
    2. when CA309/CA310 (bills in, always Nc) are sent and non-zero: whole units exactly
       when CA304 x 10^places == CA309 (or CA308 x 10^places == CA310);
    3. otherwise, when CA301..CA303 are sent: bills are the cash in that went neither to the
       cashbox nor to the tubes as coins, so whole units exactly when
       CA301 - CA302 - CA303 == CA304 x 10^places (same for CA305..CA308);
    4. otherwise Nc, the standard's reading.
    """
    if places == 0:
        return False
    unit = 10**places
    for bills, nc, total, box, tubes in ((4, 9, 1, 2, 3), (8, 10, 5, 6, 7)):
        count = raw[bills]
        if not count:
            continue
        reference = raw[nc]
        if reference:
            return count * unit == reference and count != reference
        cash_in = raw[total]
        if cash_in is not None and raw[box] is not None and raw[tubes] is not None:
            residual = cash_in - (raw[box] or 0) - (raw[tubes] or 0)
            if residual == count * unit:
                return True
            if residual == count:
                return False
    return False
