"""Exact numbers for the limits: a value is taken at its shortest decimal form (10.3 is 103/10,
not the binary float nearest it), so 10.1 -> 10.3 is a change of exactly 0.2 and a limit of
0.2 lets it through, while 0.2 plus the smallest step over it does not.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from fractions import Fraction

from fleetcore.safety.policy import MAX_MAGNITUDE

_BOUND = Fraction(int(MAX_MAGNITUDE))


def is_number(value: object) -> bool:
    """True for an int or float (a bool is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def exact(value: object) -> Fraction | None:
    """The number as an exact fraction of its decimal form; None unless a finite number within
    MAX_MAGNITUDE."""
    if not is_number(value):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = Fraction(repr(value))
    else:
        assert isinstance(value, int)
        number = Fraction(value)
    return number if abs(number) <= _BOUND else None


def limit(value: float) -> Fraction:
    """A policy's number (finite and bounded by its validation) as an exact fraction."""
    return Fraction(repr(value))


def shown(number: Fraction) -> float:
    """A fraction for people and JSON (bounded, so the float is close)."""
    return float(number)


def utc(moment: datetime) -> datetime:
    """An aware time; a naive one is taken as UTC (the database's convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
