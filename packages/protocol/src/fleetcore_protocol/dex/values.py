"""Typed reading of elements (AN, N0, Nc, DT, TM) and the bounded warning list.

An element out of its type becomes None plus a BAD_ELEMENT warning; nothing here raises.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from datetime import date, datetime, time
from decimal import Decimal

from fleetcore_protocol.dex.lexer import Segment
from fleetcore_protocol.dex.model import DexWarning, WarningCode

# Beyond this many warnings of one code in one scope the rest are summed up in one more
# warning: a megabyte of garbage must not become a megabyte of warnings.
MAX_WARNINGS_PER_CODE = 20
# 18 digits hold any real counter; a longer "number" is garbage, and int() of a huge digit
# string is the one conversion whose cost grows with the input.
MAX_DIGITS = 18

_DMY = re.compile(r"(\d{1,2})[-./](\d{1,2})[-./](\d{4})")
_YMD = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_HMS = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")


class Warnings:
    """Warnings of one scope (the file, or one ST set), at most MAX_WARNINGS_PER_CODE a code."""

    def __init__(self) -> None:
        self.items: list[DexWarning] = []
        self._seen: Tally[WarningCode] = Tally()

    def add(
        self, code: WarningCode, message: str, line: int | None = None, segment: str | None = None
    ) -> None:
        """Record a warning unless this code already has its share."""
        self._seen[code] += 1
        if self._seen[code] <= MAX_WARNINGS_PER_CODE:
            self.items.append(DexWarning(code, message, line, segment))

    def codes(self) -> set[WarningCode]:
        """The codes recorded so far."""
        return set(self._seen)

    def result(self) -> tuple[DexWarning, ...]:
        """The warnings, plus one summary per code that overflowed."""
        extra = [
            DexWarning(code, f"{n - MAX_WARNINGS_PER_CODE} more {code} warnings not listed")
            for code, n in self._seen.items()
            if n > MAX_WARNINGS_PER_CODE
        ]
        return tuple(self.items) + tuple(extra)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS


def _year(text: str) -> int:
    year = int(text)
    if len(text) == 2:  # YYMMDD: the EVA-DTS pivot is not written down; 1970 is the common one
        year += 2000 if year < 70 else 1900
    return year


class Fields:
    """Element k (1-based, as in XXn0k) of one segment, read as a type."""

    __slots__ = ("decimal_places", "segment", "warnings")

    def __init__(self, segment: Segment, warnings: Warnings, decimal_places: int = 2) -> None:
        self.segment = segment
        self.warnings = warnings
        self.decimal_places = decimal_places

    def __len__(self) -> int:
        return len(self.segment.elements)

    def bad(self, k: int, value: str, expected: str) -> None:
        """Warn that element k is not of its type."""
        name = f"{self.segment.id}{k:02d}" if len(self.segment.id) <= 4 else self.segment.id
        self.warnings.add(
            WarningCode.BAD_ELEMENT,
            f"{name} {value[:40]!r} is not {expected}",
            self.segment.line,
            self.segment.id,
        )

    def text(self, k: int) -> str | None:
        """An AN element, surrounding blanks removed; None when empty or absent."""
        elements = self.segment.elements
        if k > len(elements):
            return None
        return elements[k - 1].strip() or None

    def count(self, k: int) -> int | None:
        """An N0 element."""
        elements = self.segment.elements
        if k > len(elements):
            return None
        value = elements[k - 1]
        # The fast path: the common element is a short clean digit string (hot on big files).
        if value.isdigit() and value.isascii() and len(value) <= MAX_DIGITS:
            return int(value)
        value = value.strip()
        if not value:
            return None
        if not _digits(value):
            self.bad(k, value, "a whole number")
            return None
        return int(value)

    def number(self, k: int) -> int | None:
        """An Nc element as the integer written (implied decimals not yet applied)."""
        return self.count(k)

    def money(self, k: int) -> Decimal | None:
        """An Nc element in currency units, ID401 decimal places applied."""
        value = self.count(k)
        return None if value is None else scale(value, self.decimal_places)

    def flag(self, k: int) -> bool | None:
        """A 0/1 element."""
        value = self.text(k)
        if value is None:
            return None
        if value not in ("0", "1"):
            self.bad(k, value, "0 or 1")
            return None
        return value == "1"

    def date(self, k: int) -> date | None:
        """A DT element: YYMMDD or YYYYMMDD (also dd-mm-yyyy and yyyy-mm-dd, seen in files)."""
        value = self.text(k)
        if value is None or value.strip("0") == "":
            return None  # devices send 000000 for "never"
        try:
            if _digits(value) and len(value) in (6, 8):
                cut = len(value) - 4
                return date(_year(value[:cut]), int(value[cut : cut + 2]), int(value[cut + 2 :]))
            if match := _DMY.fullmatch(value):
                return date(int(match[3]), int(match[2]), int(match[1]))
            if match := _YMD.fullmatch(value):
                return date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            pass
        self.bad(k, value, "a date (YYMMDD or YYYYMMDD)")
        return None

    def time(self, k: int) -> time | None:
        """A TM element: HHMM or HHMMSS (also HH:MM[:SS])."""
        value = self.text(k)
        if value is None:
            return None
        try:
            if _digits(value) and len(value) in (4, 6):
                return time(int(value[:2]), int(value[2:4]), int(value[4:] or 0))
            if match := _HMS.fullmatch(value):
                return time(int(match[1]), int(match[2]), int(match[3] or 0))
        except ValueError:
            pass
        self.bad(k, value, "a time (HHMM or HHMMSS)")
        return None

    def moment(self, date_k: int, time_k: int) -> datetime | None:
        """A DT and a TM element together; midnight when only the date is sent."""
        day = self.date(date_k)
        clock = self.time(time_k)
        if day is None:
            return None
        return datetime.combine(day, clock or time(0, 0))


def scale(value: int, decimal_places: int) -> Decimal:
    """An integer with implied decimals as a Decimal in currency units."""
    return Decimal(value).scaleb(-decimal_places)
