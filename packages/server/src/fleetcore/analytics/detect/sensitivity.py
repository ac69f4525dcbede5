"""How sensitive a series detector is: one frozen dataclass per key, with documented defaults.

The defaults are tuned for readings about a minute apart (bench/analytics_eval.py: tuned on
one seed, reported on another) and aim at under one false alarm per device-week on a clean
machine with three keys. Every count is in readings, not seconds: the detectors are
sample-based so that irregular cadences cost nothing; only the daily baseline reads the clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """Per-key switches and thresholds of the six methods (see each default's reason)."""

    # Shared
    window: int = 60  # rolling median/MAD window: an hour at 1/min, long enough for a stable MAD
    warmup: int = 30  # readings learned before any method but range may report (half a window)
    resolution: float = 0.0  # the sensor's step; the MAD never goes below it (0: unknown)
    floor_rel: float = 0.001  # ... nor below 0.1 % of the level, so a flat series cannot explode
    clear_after: int = 5  # readings back inside half the band before a method's anomaly clears
    clear_ratio: float = 0.5  # "back inside": |score| below this fraction of the threshold
    # Robust z-score on the rolling median/MAD
    robust_z: bool = True
    z_threshold: float = 6.0  # MAD-sigmas; Gaussian tail 2e-9, leaves room for a noisy MAD
    min_run: int = 2  # consecutive flagged readings: a single one is the spike method's job
    # EWMA residual, with the daily baseline once every hourly bin has enough data
    ewma: bool = True
    ewma_alpha: float = 0.05  # level EWMA (~20 readings): follows a daily cycle at 1/min
    var_alpha: float = 0.01  # noise variance around the residual's own EWMA (~100 readings)
    model_alpha: float = 0.001  # mean square of that EWMA, the baseline's usual error: learned
    # over most of a day, so a daily cycle that varies widens sigma and a drift of hours does not
    ewma_threshold: float = 6.0  # residual sigmas, as robust_z
    seasonal: bool = True
    season_min_count: int = 20  # readings in every hourly bin before the daily baseline is used
    season_cap: int = 200  # a bin averages its last ~200 readings (about 3 days at 1/min)
    offset_alpha: float = 0.0075  # level offset on the daily baseline (~130 readings): slow
    # enough for a shift to show as drift, fast enough to absorb day-to-day changes of the cycle
    # Spikes: one reading far from the level, the next one back near it
    spike: bool = True
    spike_threshold: float = 8.0  # MAD-sigmas; higher than z: a single reading is cheap noise
    spike_back: float = 3.0  # the confirming reading must be within this many MAD-sigmas
    spike_confirm: int = 1  # readings that must come back: the delay is one reading
    # Stuck sensor
    stuck: bool = True
    stuck_samples: int = 20  # unchanged readings (20 min at 1/min) where repeats are rare
    stuck_max_repeat: float = 0.2  # "normally varies": under 20 % of readings repeat the last
    stuck_tolerance: float = 0.0  # |change| at or below this counts as no change
    # Drift: two-sided CUSUM on the standardised EWMA residual
    drift: bool = True
    drift_k: float = 1.5  # allowance, sigmas: sustained shifts from ~2 sigma; smaller ones
    # are within what a day-to-day change of the daily cycle does to the residual
    drift_h: float = 10.0  # decision interval: a 3-sigma shift is found in ~7 readings
    drift_clip: float = 4.0  # residuals clipped so one spike cannot make a drift
    drift_quiet: int = 360  # a same-direction re-detection within 6 h of the last is not news
    # Range violation (from the device profile)
    range_low: float | None = None
    range_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (every field is a number, a bool or None)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sensitivity:
        """Back from to_dict; unknown keys are dropped so older states still load."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
