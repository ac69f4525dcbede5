"""What a series is expected to read now, and how far from it is normal.

Expected: a daily baseline (24 hourly bins, linear between their centres) plus a level
offset, once every bin has `season_min_count` readings; before that (or with `seasonal`
off) a level EWMA. Sigma has two parts: the noise around the residual's own fast EWMA, and
the slow mean square of that EWMA, the baseline's usual error (a daily cycle that varies
from day to day). A drift of hours moves the second only slowly, so it shows.

The bins are a plain mean until ready, then learn slowly (the offset follows the level, the
bins only the shape of the day): a fast bin would absorb a drift.
"""

from __future__ import annotations

import math
from typing import Any

from fleetcore.analytics.detect.sensitivity import Sensitivity

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Baseline:
    """The EWMA level, the daily bins, the offset and the residual's variance parts."""

    __slots__ = ("bias", "bias_var", "bins", "counts", "level", "offset", "sens", "var")

    def __init__(self, sens: Sensitivity) -> None:
        self.sens = sens
        self.level = 0.0
        self.var = 0.0
        self.bias = 0.0  # fast EWMA of the residual: var is the spread around it
        self.bias_var = 0.0  # slow mean square of the bias: how wrong the baseline usually is
        self.offset = 0.0
        self.bins = [0.0] * 24
        self.counts = [0] * 24

    def ready(self) -> bool:
        """Whether the daily baseline is in use (every hourly bin has enough readings)."""
        return self.sens.seasonal and min(self.counts) >= self.sens.season_min_count

    def season(self, ts: int) -> float:
        """The daily baseline at ts: linear between the centres of the hourly bins."""
        pos = (ts % DAY_MS) / HOUR_MS - 0.5
        low = math.floor(pos)
        frac = pos - low
        return self.bins[low % 24] * (1.0 - frac) + self.bins[(low + 1) % 24] * frac

    def expected(self, ts: int) -> float:
        """The value expected at ts."""
        return self.season(ts) + self.offset if self.ready() else self.level

    def sigma(self, floor: float) -> float:
        """The residual's sigma, at least `floor`."""
        return max(math.sqrt(self.var + self.bias_var), floor)

    def shift(self, by: float) -> None:
        """Re-anchor after a detected change of level."""
        self.offset += by
        self.level += by

    def learn(self, ts: int, x: float, expected: float, n: int, warm: bool) -> None:
        """Learn x (already clipped to the expected band when warm); n counts readings."""
        s = self.sens
        if n == 1:
            self.level = x
        if warm:
            residual = x - expected
            self.bias += s.ewma_alpha * (residual - self.bias)
            self.bias_var += s.model_alpha * (self.bias * self.bias - self.bias_var)
            spread = residual - self.bias
            self.var += s.var_alpha * (spread * spread - self.var)
        else:
            residual = x - self.level
            self.var += (1.0 / n) * (residual * residual - self.var)
        self.level += s.ewma_alpha * (x - self.level)
        ready = self.ready()
        if ready:
            self.offset += s.offset_alpha * (x - self.season(ts) - self.offset)
        hour = (ts // HOUR_MS) % 24
        self.counts[hour] = min(self.counts[hour] + 1, s.season_cap)
        weight = s.season_cap if ready else self.counts[hour]
        self.bins[hour] += (x - self.offset - self.bins[hour]) / weight

    def state(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "level": self.level,
            "var": self.var,
            "bias": self.bias,
            "bias_var": self.bias_var,
            "offset": self.offset,
            "bins": list(self.bins),
            "counts": list(self.counts),
        }

    @classmethod
    def from_state(cls, sens: Sensitivity, data: dict[str, Any]) -> Baseline:
        """Back from state()."""
        b = cls(sens)
        b.level, b.var = float(data["level"]), float(data["var"])
        b.bias, b.bias_var = float(data["bias"]), float(data["bias_var"])
        b.offset = float(data["offset"])
        b.bins = [float(v) for v in data["bins"]]
        b.counts = [int(c) for c in data["counts"]]
        return b
