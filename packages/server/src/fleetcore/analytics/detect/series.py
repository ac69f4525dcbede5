"""One series (one device, one key): readings in time order in, findings out.

Each reading costs bounded work (a 60-value window, a few EWMAs, 24 hourly bins, two CUSUM
sums), and the whole state is a small JSON-able dict, so a detector saved at any reading
and restored continues exactly as one that never stopped.

The EWMA and drift methods standardise the residual against the expected value and sigma
of fleetcore.analytics.detect.baseline (a daily baseline once it has the data).

Alert storms are avoided twice over. Each method keeps an "active" flag: it reports when an
anomaly starts and stays silent until the anomaly has cleared (the score back under half
the threshold for `clear_after` readings). And a flagged reading is learned only clipped to
the edge of the expected band (stuck readings not at all), so the baseline cannot take an
anomaly for normal quickly; a lasting change of level is re-anchored by the drift method.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from fleetcore.analytics.detect.baseline import Baseline
from fleetcore.analytics.detect.sensitivity import Sensitivity
from fleetcore.analytics.detect.window import RollingWindow
from fleetcore.analytics.findings import MAX_EVIDENCE, Finding, Method, Reading

STATE_VERSION = 1
MAX_ABS = 1e15  # larger is no physical reading; squares of it stay finite
MAD_TO_SIGMA = 1.4826  # a MAD times this estimates a Gaussian sigma
_TINY = 1e-12


def _clip(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


class SeriesDetector:
    """The six methods on one series; `observe` each reading in time order."""

    def __init__(self, key: str, sensitivity: Sensitivity | None = None) -> None:
        self.key = key
        self.sens = sensitivity or Sensitivity()
        self.window = RollingWindow(self.sens.window)
        self.recent: deque[Reading] = deque(maxlen=MAX_EVIDENCE)
        self.ignored: dict[str, int] = {}
        self.last_ts: int | None = None
        self.n = 0  # accepted readings
        self.mad_ref = 0.0  # slow memory of the MAD: the floor after a quiet spell
        self.baseline = Baseline(self.sens)
        # Per-method anomaly state: consecutive flagged, consecutive calm, active
        self.z_run = self.z_calm = 0
        self.z_active = False
        self.e_run = self.e_calm = 0
        self.e_active = False
        self.spike_pending: list[float] | None = None  # [level, scale, back_needed, value, ts]
        self.spike_calm = 0
        self.spike_active = False
        self.prev: float | None = None
        self.stuck_run = 0  # readings equal to the first of the current run
        self.repeat_rate = 0.0
        self.repeat_at_start = 0.0
        self.cusum = [0.0, 0.0]  # up, down
        self.cusum_sum = [0.0, 0.0]  # residual sums since each was last zero
        self.cusum_len = [0, 0]
        self.drift_last = [-(10**9), -(10**9)]  # reading index of the last detection per side
        self.range_active = False

    # -- public ------------------------------------------------------------------------

    def observe(self, reading: Reading) -> list[Finding]:
        """Feed one reading; the findings it completes (usually none)."""
        reason = self._rejected(reading)
        if reason is not None:
            self.ignored[reason] = self.ignored.get(reason, 0) + 1
            return []
        self.last_ts = reading.ts
        self.recent.append(reading)
        value = float(reading.value)
        found: list[Finding] = []
        self._range(reading, found)
        stuck = self._stuck(reading, found)
        self.n += 1
        if stuck:  # a stuck sensor says nothing about the process: learn and judge nothing
            return found
        warm = len(self.window) >= self.sens.warmup
        med = self.window.median() if len(self.window) else value
        scale = self._scale(med)
        expected, sigma = self._expected(reading.ts, scale)
        if warm:
            self._spike(reading, med, scale, found)
            self._robust_z(reading, med, scale, found)
            self._ewma(reading, expected, sigma, found)
            # With a daily cycle expected, drift waits for the daily baseline: a lagging
            # EWMA on a daily slope would read as a drift.
            if not self.sens.seasonal or self.baseline.ready():
                self._drift(reading, expected, sigma, found)
        self._learn(reading.ts, value, med, scale, expected, sigma, warm)
        return found

    def state(self) -> dict[str, Any]:
        """Everything needed to continue: JSON-able (finite floats, ints, lists)."""
        return {
            "v": STATE_VERSION,
            "key": self.key,
            "sensitivity": self.sens.to_dict(),
            "window": self.window.values(),
            "recent": [[r.ts, r.value] for r in self.recent],
            "ignored": dict(self.ignored),
            "last_ts": self.last_ts,
            "n": self.n,
            "mad_ref": self.mad_ref,
            "baseline": self.baseline.state(),
            "z": [self.z_run, self.z_calm, self.z_active],
            "e": [self.e_run, self.e_calm, self.e_active],
            "spike": [self.spike_pending, self.spike_calm, self.spike_active],
            "prev": self.prev,
            "stuck": [self.stuck_run, self.repeat_rate, self.repeat_at_start],
            "cusum": [self.cusum, self.cusum_sum, self.cusum_len, self.drift_last],
            "range_active": self.range_active,
        }

    @classmethod
    def from_state(
        cls, data: dict[str, Any], sensitivity: Sensitivity | None = None
    ) -> SeriesDetector:
        """A detector continuing from `state()`; `sensitivity` replaces the saved one."""
        sens = sensitivity or Sensitivity.from_dict(data["sensitivity"])
        d = cls(data["key"], sens)
        d.window = RollingWindow(sens.window, [float(v) for v in data["window"]][-sens.window :])
        d.recent.extend(Reading(int(ts), float(v)) for ts, v in data["recent"])
        d.ignored = {str(k): int(v) for k, v in data["ignored"].items()}
        d.last_ts = data["last_ts"]
        d.n = int(data["n"])
        d.mad_ref = float(data["mad_ref"])
        d.baseline = Baseline.from_state(sens, data["baseline"])
        d.z_run, d.z_calm, d.z_active = data["z"]
        d.e_run, d.e_calm, d.e_active = data["e"]
        pending, d.spike_calm, d.spike_active = data["spike"]
        d.spike_pending = None if pending is None else [float(p) for p in pending]
        d.prev = data["prev"]
        d.stuck_run, d.repeat_rate, d.repeat_at_start = data["stuck"]
        sums, totals, lengths, last = data["cusum"]
        d.cusum, d.cusum_sum = [float(s) for s in sums], [float(s) for s in totals]
        d.cusum_len, d.drift_last = [int(n) for n in lengths], [int(n) for n in last]
        d.range_active = bool(data["range_active"])
        return d

    # -- helpers -----------------------------------------------------------------------

    def _rejected(self, reading: Reading) -> str | None:
        value = reading.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "not_a_number"
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf"
        if abs(value) > MAX_ABS:
            return "huge"
        if self.last_ts is not None and reading.ts <= self.last_ts:
            return "out_of_order"
        return None

    def _finding(
        self,
        method: Method,
        ts: int,
        score: float,
        threshold: float,
        band: tuple[float | None, float | None],
        evidence: int,
        severity: str = "warning",
    ) -> Finding:
        readings = tuple(self.recent)[-max(1, min(evidence, MAX_EVIDENCE)) :]
        return Finding(
            method=method,
            key=self.key,
            ts=ts,
            score=score,
            threshold=threshold,
            expected_low=band[0],
            expected_high=band[1],
            evidence=readings,
            severity="critical" if severity == "critical" else "warning",
        )

    def _floor(self, level: float) -> float:
        """The least MAD this series may have: resolution, 0.1 % of level, half its usual MAD."""
        return max(
            self.sens.resolution, self.sens.floor_rel * abs(level), 0.5 * self.mad_ref, _TINY
        )

    def _scale(self, med: float) -> float:
        """The robust sigma: MAD x 1.4826, floored."""
        mad = self.window.mad(med) if len(self.window) else 0.0
        return MAD_TO_SIGMA * max(mad, self._floor(med))

    def _expected(self, ts: int, scale: float) -> tuple[float, float]:
        """The baseline's expected value and sigma, floored (as the MAD, and half the scale)."""
        expected = self.baseline.expected(ts)
        floor = max(MAD_TO_SIGMA * self._floor(expected), 0.5 * scale)
        return expected, self.baseline.sigma(floor)

    # -- methods -----------------------------------------------------------------------

    def _range(self, reading: Reading, found: list[Finding]) -> None:
        low, high = self.sens.range_low, self.sens.range_high
        value = reading.value
        beyond = 0.0
        if high is not None and value > high:
            beyond = value - high
        elif low is not None and value < low:
            beyond = low - value
        if beyond > 0 and not self.range_active:
            self.range_active = True
            found.append(
                self._finding(Method.RANGE, reading.ts, beyond, 0.0, (low, high), 1, "critical")
            )
        elif beyond == 0:
            self.range_active = False

    def _stuck(self, reading: Reading, found: list[Finding]) -> bool:
        """Count the run of unchanged readings; report once when it reaches stuck_samples."""
        s = self.sens
        same = self.prev is not None and abs(reading.value - self.prev) <= s.stuck_tolerance
        self.prev = reading.value
        if same:
            self.stuck_run += 1
        else:
            self.stuck_run = 1
            self.repeat_at_start = self.repeat_rate
        # The repeat rate learns only outside long runs, so a stuck period cannot teach it.
        if self.stuck_run <= 2:
            self.repeat_rate += 0.01 * ((1.0 if same else 0.0) - self.repeat_rate)
        if not s.stuck or self.n < max(s.warmup, 100):
            return False
        varies = self.repeat_at_start <= s.stuck_max_repeat
        if varies and self.stuck_run == s.stuck_samples:
            found.append(
                self._finding(
                    Method.STUCK,
                    reading.ts,
                    float(self.stuck_run),
                    float(s.stuck_samples),
                    (None, None),
                    self.stuck_run,
                )
            )
        return varies and self.stuck_run >= s.stuck_samples

    def _spike(self, reading: Reading, med: float, scale: float, found: list[Finding]) -> None:
        """Confirm a pending spike if this reading is back near its level; maybe start one."""
        s = self.sens
        value = reading.value
        pending = self.spike_pending
        if pending is not None:
            level, pscale, needed = pending[0], pending[1], pending[2]
            if abs(value - level) <= s.spike_back * pscale:
                needed -= 1
                pending[2] = needed
                if needed <= 0:
                    self.spike_pending = None
                    if not self.spike_active:
                        self.spike_active = True
                        band = (
                            level - s.spike_threshold * pscale,
                            level + s.spike_threshold * pscale,
                        )
                        score = abs(pending[3] - level) / pscale
                        found.append(
                            self._finding(
                                Method.SPIKE,
                                reading.ts,
                                score,
                                s.spike_threshold,
                                band,
                                s.spike_confirm + 3,
                            )
                        )
                    self.spike_calm = 0
                return
            self.spike_pending = None  # not back: a shift, not a spike
        z = abs(value - med) / scale
        if z > s.spike_threshold and s.spike:
            self.spike_pending = [med, scale, float(s.spike_confirm), value, float(reading.ts)]
            self.spike_calm = 0
        elif z < s.clear_ratio * s.spike_threshold:
            self.spike_calm += 1
            if self.spike_calm >= s.clear_after:
                self.spike_active = False

    def _robust_z(self, reading: Reading, med: float, scale: float, found: list[Finding]) -> None:
        s = self.sens
        z = (reading.value - med) / scale
        if abs(z) > s.z_threshold:
            self.z_run += 1
            self.z_calm = 0
            if s.robust_z and self.z_run >= s.min_run and not self.z_active:
                self.z_active = True
                band = (med - s.z_threshold * scale, med + s.z_threshold * scale)
                found.append(
                    self._finding(
                        Method.ROBUST_Z, reading.ts, abs(z), s.z_threshold, band, self.z_run
                    )
                )
            return
        self.z_run = 0
        self.z_calm = self.z_calm + 1 if abs(z) < s.clear_ratio * s.z_threshold else 0
        if self.z_calm >= s.clear_after:
            self.z_active = False

    def _ewma(self, reading: Reading, expected: float, sigma: float, found: list[Finding]) -> None:
        s = self.sens
        z = (reading.value - expected) / sigma
        if abs(z) > s.ewma_threshold:
            self.e_run += 1
            self.e_calm = 0
            if s.ewma and self.e_run >= s.min_run and not self.e_active:
                self.e_active = True
                band = (expected - s.ewma_threshold * sigma, expected + s.ewma_threshold * sigma)
                found.append(
                    self._finding(
                        Method.EWMA, reading.ts, abs(z), s.ewma_threshold, band, self.e_run
                    )
                )
            return
        self.e_run = 0
        self.e_calm = self.e_calm + 1 if abs(z) < s.clear_ratio * s.ewma_threshold else 0
        if self.e_calm >= s.clear_after:
            self.e_active = False

    def _drift(self, reading: Reading, expected: float, sigma: float, found: list[Finding]) -> None:
        """Two-sided CUSUM; on detection re-anchor the baseline by the estimated shift."""
        s = self.sens
        u = _clip((reading.value - expected) / sigma, -s.drift_clip, s.drift_clip)
        for side, signed in ((0, u), (1, -u)):
            total = self.cusum[side] + signed - s.drift_k
            if total <= 0:
                self.cusum[side], self.cusum_sum[side], self.cusum_len[side] = 0.0, 0.0, 0
                continue
            self.cusum[side] = total
            self.cusum_sum[side] += reading.value - expected
            self.cusum_len[side] += 1
            if total <= s.drift_h:
                continue
            shift = self.cusum_sum[side] / self.cusum_len[side]
            self.baseline.shift(shift)
            quiet = self.n - self.drift_last[side] > s.drift_quiet
            self.drift_last[side] = self.n
            if s.drift and quiet:
                band = (expected - s.drift_k * sigma, expected + s.drift_k * sigma)
                found.append(
                    self._finding(
                        Method.DRIFT, reading.ts, total, s.drift_h, band, self.cusum_len[side]
                    )
                )
            self.cusum = [0.0, 0.0]
            self.cusum_sum = [0.0, 0.0]
            self.cusum_len = [0, 0]
            return

    # -- learning ----------------------------------------------------------------------

    def _learn(
        self,
        ts: int,
        value: float,
        med: float,
        scale: float,
        expected: float,
        sigma: float,
        warm: bool,
    ) -> None:
        """Update the baselines, a flagged value clipped to its band's edge."""
        s = self.sens
        if warm:
            clipped = _clip(value, med - s.z_threshold * scale, med + s.z_threshold * scale)
            mad = scale / MAD_TO_SIGMA
            if clipped == value:
                self.mad_ref += 0.01 * (mad - self.mad_ref)
        else:
            clipped = value
        self.window.push(clipped)
        if warm:
            band = s.ewma_threshold * sigma
            value = _clip(value, expected - band, expected + band)
        self.baseline.learn(ts, value, expected, self.n, warm)
