"""What a DEX/EVA-DTS audit file says, as plain frozen values. No I/O, no dependencies.

Money is `Decimal` in currency units (ID401 decimal places already applied); counts are
`int`. `None` means the file did not send the element (EVA-DTS lets devices leave
elements off), never zero. Every warning names its line (1-based) when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import StrEnum


class WarningCode(StrEnum):
    """Why a file or a set is not what the standard says; each is a parser warning."""

    NOT_DEX = "NOT_DEX"  # nothing in the input looks like a DEX audit
    CRC_MISMATCH = "CRC_MISMATCH"  # G85 matches the set in neither byte order
    CRC_MISSING = "CRC_MISSING"  # no G85 in a set
    SEGMENT_COUNT = "SEGMENT_COUNT"  # SE01 disagrees with the segments ST..SE
    CONTROL_NUMBER = "CONTROL_NUMBER"  # SE02 differs from ST02, or DXE02 from the sets
    UNKNOWN_SEGMENT = "UNKNOWN_SEGMENT"  # kept in `raw_segments`
    BAD_ELEMENT = "BAD_ELEMENT"  # an element out of its type (kept as None)
    BAD_ESCAPE = "BAD_ESCAPE"  # a ^..^ that is not ^HH^ (kept as written)
    BAD_CHARACTER = "BAD_CHARACTER"  # a byte outside 0x20-0x7E in a line
    TRUNCATED = "TRUNCATED"  # the input ends before SE / DXE
    TEXT_BEFORE_DXS = "TEXT_BEFORE_DXS"
    MISSING_DXS = "MISSING_DXS"  # an ST set with no DXS envelope before it
    TEXT_AFTER_DXE = "TEXT_AFTER_DXE"
    MULTIPLE_SETS = "MULTIPLE_SETS"  # several ST sets in one file (each returned)
    LOOP_SEGMENTS = "LOOP_SEGMENTS"  # LS/LE loop markers (skipped, not counted by SE)
    MIXED_LINE_ENDS = "MIXED_LINE_ENDS"
    ORPHAN_SEGMENT = "ORPHAN_SEGMENT"  # e.g. PA2 before any PA1
    OUTSIDE_SET = "OUTSIDE_SET"  # a data segment between DXS and ST, or after SE
    TOO_LARGE = "TOO_LARGE"  # more products/events/price lines than any machine sends; rest dropped


# Warnings that make an audit unfit for accounting until a person accepts it: the data may
# be incomplete or altered. The others describe a file that is odd but intact.
DAMAGING = frozenset(
    {WarningCode.CRC_MISMATCH, WarningCode.TRUNCATED, WarningCode.NOT_DEX, WarningCode.TOO_LARGE}
)


@dataclass(frozen=True, slots=True)
class DexWarning:
    """One thing the parser noticed; never an exception."""

    code: WarningCode
    message: str
    line: int | None = None
    segment: str | None = None  # the segment id, e.g. "PA2"


@dataclass(frozen=True, slots=True)
class RawSegment:
    """A segment kept as written: unknown ids, vendor blocks (MA5), loop markers."""

    line: int
    id: str
    elements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Counter:
    """The EVA-DTS value/number pair, since initialisation and since the last reset."""

    value_init: Decimal | None = None
    count_init: int | None = None
    value_reset: Decimal | None = None
    count_reset: int | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """ID1 (the machine) or CB1 / CA1 / BA1 / DA1 / DB1 / TA1 / AM1 / FA1 (its parts)."""

    segment: str
    serial: str | None = None
    model: str | None = None
    revision: str | None = None  # ID103 build standard, or the part's software revision
    location: str | None = None  # ID104 only
    user: str | None = None
    asset: str | None = None  # ID106 / xx105
    dts_level: str | None = None  # ID107
    dts_revision: str | None = None  # ID108


@dataclass(frozen=True, slots=True)
class Currency:
    """ID4: the decimal places money elements carry, and the currency."""

    decimal_places: int = 2  # the EVA-DTS default when ID4 is absent
    numeric_code: str | None = None
    alpha_code: str | None = None  # ISO 4217, from ID403 or derived from ID402 (1978 -> EUR)


@dataclass(frozen=True, slots=True)
class CashFlow:
    """CA3 (cash in) and CA4 (cash out): since reset and since initialisation."""

    cash_in_reset: Decimal | None = None
    to_cashbox_reset: Decimal | None = None
    to_tubes_reset: Decimal | None = None
    bills_in_reset: Decimal | None = None
    cash_in_init: Decimal | None = None
    to_cashbox_init: Decimal | None = None
    to_tubes_init: Decimal | None = None
    bills_in_init: Decimal | None = None
    dispensed_reset: Decimal | None = None
    manually_dispensed_reset: Decimal | None = None
    dispensed_init: Decimal | None = None
    manually_dispensed_init: Decimal | None = None
    bills_whole_units: bool = False  # CA304/CA308 read as whole units (segments.bills_whole_units)


@dataclass(frozen=True, slots=True)
class PaymentBreakdown:
    """PA7: one selection's vends by one payment device (CA, DA, DB, TA, ...)."""

    device: str
    price_list: str | None
    price: Decimal | None
    counter: Counter


@dataclass(frozen=True, slots=True)
class SoldOut:
    """PA5: when the selection last sold out, and selections tried while sold out."""

    date: date | None = None
    time: time | None = None
    selected_while_sold_out: int | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """A PA1 group: one selection (slot / column / price line) and its counters."""

    line: int
    selection: str  # PA101, escapes decoded, surrounding blanks removed
    price: Decimal | None = None
    name: str | None = None  # PA103: a name or a barcode
    capacity: int | None = None
    par_level: int | None = None
    dispensed_quantity: int | None = None
    mechanism_missing: bool = False  # PA107 == 1 (not sold out)
    current_level: int | None = None
    refill_level: int | None = None
    paid: Counter = field(default_factory=Counter)  # PA2 01-04
    discounted: Counter = field(default_factory=Counter)  # PA2 05-08
    surcharged: Counter = field(default_factory=Counter)  # PA2 09-12
    test: Counter = field(default_factory=Counter)  # PA3
    free: Counter = field(default_factory=Counter)  # PA4
    sold_out: SoldOut | None = None  # PA5
    by_payment: tuple[PaymentBreakdown, ...] = ()  # PA7
    mixed: Counter | None = None  # PA8 mixed cash + cashless vends


@dataclass(frozen=True, slots=True)
class PriceLine:
    """LA1: a price on a price list (vends since reset and since init, in that order)."""

    price_list: str
    selection: str
    price: Decimal | None
    vends_reset: int | None
    vends_init: int | None


@dataclass(frozen=True, slots=True)
class Event:
    """EA1 (one occurrence with a time) or EA2 (counts of a code)."""

    segment: str  # "EA1" or "EA2"
    code: str
    line: int
    at: datetime | None = None  # EA1 02/03
    duration_minutes: int | None = None
    count_reset: int | None = None  # EA2
    count_init: int | None = None
    active: bool | None = None


@dataclass(frozen=True, slots=True)
class ReadInfo:
    """EA3: this read and the one before it."""

    reads_with_reset_init: int | None = None
    read_at: datetime | None = None
    terminal: str | None = None
    previous_read_at: datetime | None = None
    previous_terminal: str | None = None
    reads_init: int | None = None
    resets_init: int | None = None


@dataclass(frozen=True, slots=True)
class CrcCheck:
    """G85 against the CRC-16/ARC of the set: which byte order matched, if any."""

    sent: str | None  # the 4 hex digits as written; None when no G85
    computed: str  # most significant byte first
    matched: str | None  # "msb_first" (the standard), "lsb_first" (older equipment), None


@dataclass(frozen=True, slots=True)
class Audit:
    """One ST..SE transaction set: one machine's audit at one read."""

    control_number: str | None
    first_line: int
    machine: Identity = field(default_factory=lambda: Identity("ID1"))
    currency: Currency = field(default_factory=Currency)
    parts: tuple[Identity, ...] = ()  # CB1, CA1, BA1, DA1, DB1, TA1, AM1, FA1
    machine_time: datetime | None = None  # ID5 date + time
    paid: Counter = field(default_factory=Counter)  # VA1 01-04
    test: Counter = field(default_factory=Counter)  # VA2
    free: Counter = field(default_factory=Counter)  # VA3
    cash_sales: Counter = field(default_factory=Counter)  # CA2
    cashless1: Counter = field(default_factory=Counter)  # DA2
    cashless2: Counter = field(default_factory=Counter)  # DB2
    cash: CashFlow = field(default_factory=CashFlow)  # CA3 + CA4
    products: tuple[Product, ...] = ()
    price_lines: tuple[PriceLine, ...] = ()
    events: tuple[Event, ...] = ()
    read: ReadInfo | None = None  # EA3
    reset_mode: str | None = None  # SD105: AUTO (the default when absent), SAVE, RESET
    raw_segments: tuple[RawSegment, ...] = ()
    segment_count: int = 0  # segments ST..SE as counted (loop markers excluded)
    declared_segment_count: int | None = None  # SE01
    crc: CrcCheck | None = None
    warnings: tuple[DexWarning, ...] = ()

    @property
    def damaged(self) -> bool:
        """True when the data may be incomplete or altered (see DAMAGING)."""
        return any(w.code in DAMAGING for w in self.warnings)

    @property
    def read_time(self) -> datetime | None:
        """The best time of this read the file gives: EA3 02/03, else ID5."""
        if self.read is not None and self.read.read_at is not None:
            return self.read.read_at
        return self.machine_time


@dataclass(frozen=True, slots=True)
class DexFile:
    """A whole file: the DXS/DXE envelope, each ST set, and warnings outside any set."""

    audits: tuple[Audit, ...]
    warnings: tuple[DexWarning, ...]  # file-level: text before DXS, after DXE, several sets...
    sender: str | None = None  # DXS01 communication id
    version: str | None = None  # DXS03
    line_ends: str | None = None  # "CRLF", "LF", "CR" or "mixed"
    is_dex: bool = True  # False: nothing recognisable (CLI exit status 2)

    @property
    def all_warnings(self) -> tuple[DexWarning, ...]:
        """File-level warnings, then each set's."""
        return self.warnings + tuple(w for a in self.audits for w in a.warnings)
