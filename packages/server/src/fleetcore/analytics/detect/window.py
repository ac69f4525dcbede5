"""The rolling window behind the robust z-score: arrival order plus a sorted copy.

Insertion and removal are a bisect and a list shift on a fixed-size list, so the work per
reading is bounded by the window, not the history. The MAD sorts the window's deviations
(bounded too: 60 values by default).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque


class RollingWindow:
    """The last `size` values, with their median and median absolute deviation."""

    __slots__ = ("_fifo", "_sorted", "size")

    def __init__(self, size: int, values: list[float] | None = None) -> None:
        self.size = size
        self._fifo: deque[float] = deque(values or [], maxlen=None)
        self._sorted: list[float] = sorted(self._fifo)

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, value: float) -> None:
        """Add a value, dropping the oldest once full."""
        if len(self._fifo) == self.size:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        self._fifo.append(value)
        insort(self._sorted, value)

    def median(self) -> float:
        """The median (the window must not be empty)."""
        s = self._sorted
        n = len(s)
        mid = n // 2
        return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2.0

    def mad(self, median: float) -> float:
        """The median absolute deviation from `median`."""
        devs = sorted([abs(v - median) for v in self._sorted])
        n = len(devs)
        mid = n // 2
        return devs[mid] if n % 2 else (devs[mid - 1] + devs[mid]) / 2.0

    def values(self) -> list[float]:
        """The values in arrival order (for the saved state)."""
        return list(self._fifo)
