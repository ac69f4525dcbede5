"""Pure pieces of the agent's resilience: backoff with jitter, circuit breaker, pacer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

Clock = Callable[[], float]


class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in [min, min*2^n]."""

    def __init__(
        self, minimum: float, maximum: float, *, rng: Callable[[], float] = random.random
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.attempt = 0
        self._rng = rng

    def next(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.maximum, self.minimum * float(2**self.attempt))
        self.attempt = min(self.attempt + 1, 64)
        return self.minimum + (ceiling - self.minimum) * self._rng()

    def reset(self) -> None:
        """A success: start again from the minimum."""
        self.attempt = 0


class CircuitBreaker:
    """Closed until `failures` in a row; open for `reset_s`; then one trial (half-open)."""

    def __init__(self, failures: int, reset_s: float, *, clock: Clock = time.monotonic) -> None:
        self.threshold = failures
        self.reset_s = reset_s
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._clock = clock

    @property
    def state(self) -> str:
        """closed, open or half_open."""
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may go through now (half-open lets one trial through)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        """A call worked: close."""
        self.failures = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        """A call failed: open after enough in a row, or again after a failed trial."""
        self.failures += 1
        self._trial = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self._clock()


class Pacer:
    """Token bucket over readings: the backlog drains at `rate` per second, not in a burst."""

    def __init__(self, rate: float, burst: float, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._clock = clock
        self._at = clock()

    def delay(self, count: int) -> float:
        """Seconds to wait before sending `count` readings (0 when they may go now)."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        need = min(count, self.burst)
        if self.tokens >= need:
            return 0.0
        return (need - self.tokens) / self.rate

    def spend(self, count: int) -> None:
        """`count` readings went out."""
        self.tokens -= min(count, self.burst)
