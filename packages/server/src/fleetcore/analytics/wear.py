"""Remaining useful life: when a degrading key (vibration RMS, current draw, temperature rise)
reaches its failure threshold, with an interval, never a bare point.

State per series is O(1) per reading: readings fold into fixed buckets (hourly means by
default) kept in a bounded ring (30 days). An estimate is computed on demand from the ring,
a fit over at most `capacity` points.

The estimate fits two trends by least squares in a transformed space g(y): linear (g = y)
and exponential, i.e. log-linear (g = log y, only when every point is positive). Both have
two parameters and are compared on the original scale (residual sum of squares, which is
AIC under the same additive noise); the lower wins and gives the point estimate: where the
fitted trend reaches g(threshold). Its interval is the inverse-regression (Fieller)
interval: the set of times at which g(threshold) lies inside the regression's confidence
band for the trend at the given level. It is the band of the mean, not of one observation,
because failure is the trend reaching the threshold, not one noisy bucket crossing it.

Bucket means of real machines are autocorrelated (load, ambient: a wander lasting hours),
and what the band needs is the long-run variance of the noise, not its plain variance. A
kernel (Newey-West) estimate on the residuals, and the AR(1) (1 + r) / (1 - r) shortcut,
both came out several times too small for slow wander: detrending removes the wander's
low frequencies from the residuals, and white measurement noise hides the wander's memory
from the lag-1 correlation. So the noise is modelled as white noise plus an AR(1) wander,
fitted to the residual autocovariances after adding back what the trend fit took out (see
_long_run_variance), and the degrees of freedom shrink to the effective sample size. When
the two trends are within 2 quasi-AIC units (AIC with the evidence divided by that
variance inflation) the data cannot tell them apart, and the interval is the union of
both; a wrongly chosen trend otherwise always misses. A bootstrap was not chosen: it costs
hundreds of refits per estimate and is no better than its noise model. When the slope is
not significant at the level, the set is unbounded on the far side: `high_ms` is None ("not
before the horizon, as far as the data says").

Known limitation: the log-linear fit weighs every point equally although the noise is
additive, so its intervals are a little wide late in life (over-cover), never too narrow in
the bench (bench/analytics_rul.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from fleetcore.analytics.findings import Reading

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
Status = Literal["ok", "not_enough_data", "not_degrading", "past_threshold"]
Model = Literal["linear", "exponential"]
Direction = Literal["rising", "falling"]


@dataclass(frozen=True, slots=True)
class WearConfig:
    """A degrading key's failure threshold and how its history is kept and fitted."""

    threshold: float
    direction: Direction = "rising"  # failure when the value rises to (or falls to) threshold
    bucket_ms: int = HOUR_MS
    capacity: int = 720  # buckets kept: 30 days of hourly means
    min_points: int = 100  # buckets needed before an estimate (the "100 points")
    horizon_ms: int = 90 * DAY_MS  # a crossing later than this is "not degrading"
    levels: tuple[float, ...] = (0.8, 0.95)


@dataclass(frozen=True, slots=True)
class Interval:
    """Failure-time bounds (epoch ms) at one level; high is None when unbounded."""

    level: float
    low_ms: int
    high_ms: int | None


@dataclass(frozen=True, slots=True)
class Estimate:
    """The answer for one series. Times are epoch ms; eta/low/high are set when status is ok.

    low_ms/high_ms are the bounds at `level` (the first configured level); `intervals` has
    every configured level.
    """

    status: Status
    now_ms: int | None = None  # the end of the latest bucket: what the estimate is as of
    eta_ms: int | None = None
    low_ms: int | None = None
    high_ms: int | None = None
    level: float | None = None
    model: Model | None = None
    points: int = 0
    current: float | None = None  # the fitted trend now
    intervals: tuple[Interval, ...] = ()


@dataclass(slots=True)
class WearState:
    """Bucketed history of one series: closed buckets in a ring and the open one."""

    bucket_ms: int = HOUR_MS
    capacity: int = 720
    ring: deque[tuple[int, float, int]] = field(default_factory=deque)  # (start, mean, n)
    open_start: int | None = None
    open_sum: float = 0.0
    open_count: int = 0
    ignored: int = 0  # NaN/inf or older than the open bucket

    @classmethod
    def for_config(cls, config: WearConfig) -> WearState:
        """An empty state with the config's bucket size and capacity."""
        return cls(bucket_ms=config.bucket_ms, capacity=config.capacity)

    def update(self, reading: Reading) -> None:
        """Fold one reading in, O(1). Non-finite and late readings are counted and dropped."""
        if not math.isfinite(reading.value):
            self.ignored += 1
            return
        start = reading.ts - reading.ts % self.bucket_ms
        if self.open_start is None or start > self.open_start:
            self._close()
            self.open_start, self.open_sum, self.open_count = start, 0.0, 0
        elif start < self.open_start:
            self.ignored += 1  # a closed bucket's mean is final
            return
        self.open_sum += reading.value
        self.open_count += 1

    def _close(self) -> None:
        if self.open_start is None or self.open_count == 0:
            return
        self.ring.append((self.open_start, self.open_sum / self.open_count, self.open_count))
        while len(self.ring) > self.capacity:
            self.ring.popleft()

    def buckets(self) -> list[tuple[int, float]]:
        """Bucket (midpoint ms, mean), oldest first, the open bucket last; at most capacity."""
        items = [(s + self.bucket_ms // 2, m) for s, m, _ in self.ring]
        if self.open_start is not None and self.open_count:
            items.append((self.open_start + self.bucket_ms // 2, self.open_sum / self.open_count))
        return items[-self.capacity :]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot."""
        return {
            "bucket_ms": self.bucket_ms,
            "capacity": self.capacity,
            "ring": [[s, m, n] for s, m, n in self.ring],
            "open": [self.open_start, self.open_sum, self.open_count],
            "ignored": self.ignored,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WearState:
        """The state a to_dict snapshot describes."""
        open_start, open_sum, open_count = data["open"]
        return cls(
            bucket_ms=int(data["bucket_ms"]),
            capacity=int(data["capacity"]),
            ring=deque((int(s), float(m), int(n)) for s, m, n in data["ring"]),
            open_start=None if open_start is None else int(open_start),
            open_sum=float(open_sum),
            open_count=int(open_count),
            ignored=int(data.get("ignored", 0)),
        )


@dataclass(frozen=True, slots=True)
class _Fit:
    model: Model
    x: NDArray[np.float64]  # days relative to now
    slope: float
    intercept: float
    sigma2: float  # long-run variance of the residuals: the autocorrelation is in it
    df: float  # effective sample size less the two parameters
    y_rss: float  # residual sum of squares on the original scale
    inflation: float  # long-run over plain variance: one effective point per this many


def _fit(model: Model, x: NDArray[np.float64], y: NDArray[np.float64]) -> _Fit:
    g = np.log(y) if model == "exponential" else y
    n = len(x)
    slope, intercept = (float(v) for v in np.polyfit(x, g, 1))
    resid = g - (intercept + slope * x)
    fitted_y = np.exp(intercept + slope * x) if model == "exponential" else intercept + slope * x
    long_run, plain = _long_run_variance(resid)
    long_run = max(long_run, 1e-300)
    inflation = max(long_run / plain, 1.0) if plain > 0 else 1.0
    return _Fit(
        model=model,
        x=x,
        slope=slope,
        intercept=intercept,
        sigma2=long_run,
        df=max(n / inflation - 2, 1.0),
        y_rss=float(((y - fitted_y) ** 2).sum()),
        inflation=inflation,
    )


_PHIS = np.linspace(0.0, 0.995, 200)  # candidate lag-1 coefficients of the slow component


def _long_run_variance(resid: NDArray[np.float64]) -> tuple[float, float]:
    """(long-run variance, plain variance) of the noise behind detrended residuals.

    The noise is modelled as white measurement noise plus a slow AR(1) wander: autocovariances
    gamma_k = A phi^k for k >= 1. Removing a fitted trend takes about 2 LRV / n off every
    short-lag autocovariance (both parameters soak up low-frequency wander), which is why a
    kernel (Newey-West) estimate on residuals, and an AR(1) shortcut, come out far too small
    when the wander is slow. So the sample autocovariances up to n/8 lags get that offset
    back, A and phi are fitted to them, LRV = gamma_0 + 2 A phi / (1 - phi), and the offset
    is recomputed from the new LRV until it settles.
    """
    n = len(resid)
    lags = max(n // 8, 4)
    c = np.array([float(resid[k:] @ resid[: n - k]) / (n - k) for k in range(lags + 1)])
    if c[0] <= 0:
        return 0.0, 0.0
    powers = _PHIS[:, None] ** np.arange(1, lags + 1)[None, :]
    norms = np.maximum((powers * powers).sum(axis=1), 1e-300)
    ceiling = n * float(c[0]) / 3  # at least three effective points
    lrv = float(c[0])
    for _ in range(50):
        g = c + 2 * lrv / n
        amplitude = np.maximum(powers @ g[1:] / norms, 0.0)
        sse = ((g[1:] - amplitude[:, None] * powers) ** 2).sum(axis=1)
        best = int(np.argmin(sse))
        phi = float(_PHIS[best])
        new = min(float(g[0]) + 2 * float(amplitude[best]) * phi / (1 - phi), ceiling)
        if abs(new - lrv) <= 1e-9 * lrv:
            return new, float(c[0]) + 2 * new / n
        lrv = new
    return lrv, float(c[0]) + 2 * lrv / n


def _candidates(x: NDArray[np.float64], y: NDArray[np.float64], threshold: float) -> list[_Fit]:
    """The better of linear and log-linear first, then the other one if it is about as good.

    Both trends have two parameters and are judged on the original scale, so AIC reduces to
    n log RSS. Autocorrelated buckets carry fewer than n points of evidence, so the
    difference is divided by the inflation (quasi-AIC); within 2 units the data cannot
    tell the models apart and both are kept.
    """
    linear = _fit("linear", x, y)
    if threshold <= 0 or not bool(np.all(y > 0)):
        return [linear]
    exponential = _fit("exponential", x, y)
    best, other = (
        (exponential, linear) if exponential.y_rss < linear.y_rss else (linear, exponential)
    )
    n = len(x)
    qaic_gap = n * math.log(max(other.y_rss, 1e-300) / max(best.y_rss, 1e-300)) / linear.inflation
    return [best, other] if qaic_gap < 2 else [best]


def _inverse_interval(fit: _Fit, target: float, level: float) -> tuple[float, float | None]:
    """Days (relative to now) where target lies in the trend's confidence band at level.

    Solves (a + b t - target)^2 = q^2 s^2 (1/n + (t - tbar)^2 / Sxx) for t: a quadratic.
    Returns (low, high); high None when the set is unbounded on the far side.
    """
    x = fit.x
    n = len(x)
    tbar = float(x.mean())
    sxx = float(((x - tbar) ** 2).sum())
    gbar = fit.intercept + fit.slope * tbar
    # Imported here: scipy.stats costs half a second at import, paid by every process
    # (CLI commands, test servers) though only the wear estimator needs its quantiles.
    from scipy import stats

    q = float(stats.t.ppf(0.5 + level / 2, fit.df))
    k = q * q * fit.sigma2
    e = gbar - target
    a = fit.slope**2 - k / sxx
    b = 2 * fit.slope * e
    c = e * e - k / n
    point = tbar - e / fit.slope
    disc = b * b - 4 * a * c
    if a <= 0 or disc < 0:
        # The slope is not significant at this level: the set reaches to infinity on the
        # far side. Its near edge is the root nearer than the point (or now).
        if a < 0 and disc >= 0:
            roots = sorted([(-b + math.sqrt(disc)) / (2 * a), (-b - math.sqrt(disc)) / (2 * a)])
            near = [tbar + d for d in roots if tbar + d <= point]
            return (max(near) if near else 0.0), None
        return 0.0, None
    d1 = (-b - math.sqrt(disc)) / (2 * a)
    d2 = (-b + math.sqrt(disc)) / (2 * a)
    return tbar + min(d1, d2), tbar + max(d1, d2)


def estimate(state: WearState, config: WearConfig) -> Estimate:
    """Remaining useful life of the series in `state` against `config.threshold`."""
    buckets = state.buckets()
    n = len(buckets)
    if n < config.min_points:
        return Estimate(status="not_enough_data", points=n)
    assert state.open_start is not None  # n > 0
    now_ms = state.open_start + state.bucket_ms
    ts = np.array([t for t, _ in buckets], dtype=np.float64)
    y = np.array([v for _, v in buckets], dtype=np.float64)
    x = (ts - now_ms) / DAY_MS
    fits = _candidates(x, y, config.threshold)
    fit = fits[0]
    target = _target(fit, config.threshold)
    current_g = fit.intercept  # x = 0 is now
    current = math.exp(current_g) if fit.model == "exponential" else current_g
    sign = 1.0 if config.direction == "rising" else -1.0
    base = Estimate(status="ok", now_ms=now_ms, model=fit.model, points=n, current=current)
    if sign * (current_g - target) >= 0:
        return replace(base, status="past_threshold")
    if sign * fit.slope <= 0:
        return replace(base, status="not_degrading")
    eta_days = (target - fit.intercept) / fit.slope
    if eta_days * DAY_MS > config.horizon_ms:
        return replace(base, status="not_degrading")
    intervals = []
    for level in config.levels:
        low, high = _union_interval(fits, config.threshold, sign, level)
        intervals.append(
            Interval(
                level=level,
                low_ms=now_ms + int(max(low, 0.0) * DAY_MS),
                high_ms=None if high is None else now_ms + int(max(high, 0.0) * DAY_MS),
            )
        )
    first = intervals[0]
    return replace(
        base,
        eta_ms=now_ms + int(eta_days * DAY_MS),
        low_ms=first.low_ms,
        high_ms=first.high_ms,
        level=first.level,
        intervals=tuple(intervals),
    )


def _target(fit: _Fit, threshold: float) -> float:
    return math.log(threshold) if fit.model == "exponential" else threshold


def _union_interval(
    fits: list[_Fit], threshold: float, sign: float, level: float
) -> tuple[float, float | None]:
    """Days from now covered by any candidate's interval; a candidate that does not see the
    key degrading leaves the far side open, one already past the threshold opens it at now."""
    low: float = math.inf
    high: float | None = -math.inf
    for fit in fits:
        target = _target(fit, threshold)
        if sign * (fit.intercept - target) >= 0:
            low = 0.0
        elif sign * fit.slope <= 0:
            high = None
        else:
            lo, hi = _inverse_interval(fit, target, level)
            low = min(low, lo)
            high = None if hi is None or high is None else max(high, hi)
    return low, high
