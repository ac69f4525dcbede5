"""Remaining useful life: intervals that contain the true crossing, and the honest refusals."""

from __future__ import annotations

import json
import math

import numpy as np

from fleetcore.analytics.findings import Reading
from fleetcore.analytics.wear import DAY_MS, HOUR_MS, WearConfig, WearState, estimate

START = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS
STEP_MS = 10 * 60_000


def feed(config: WearConfig, level, days: float, noise: float, seed: int = 1) -> WearState:  # type: ignore[no-untyped-def]
    """A state fed every 10 minutes for `days` with level(day) + white noise."""
    rng = np.random.default_rng(seed)
    state = WearState.for_config(config)
    for i in range(int(days * DAY_MS / STEP_MS)):
        day = i * STEP_MS / DAY_MS
        state.update(Reading(START + i * STEP_MS, level(day) + float(rng.normal(0, noise))))
    return state


def crossing_ms(day: float) -> int:
    return START + int(day * DAY_MS)


def test_linear_degradation_interval_contains_the_true_crossing() -> None:
    config = WearConfig(threshold=7.0)
    # 2.0 -> 7.0 over 40 days: the true crossing is day 40; we look at day 20.
    state = feed(config, lambda d: 2.0 + 5.0 * d / 40, days=20, noise=0.2)
    est = estimate(state, config)
    assert est.status == "ok"
    assert est.model == "linear"
    assert est.low_ms is not None
    assert est.high_ms is not None
    assert est.eta_ms is not None
    assert est.low_ms <= crossing_ms(40) <= est.high_ms
    assert est.low_ms < est.eta_ms < est.high_ms
    assert abs(est.eta_ms - crossing_ms(40)) < 2 * DAY_MS
    wide = est.intervals[1]
    assert wide.level == 0.95
    assert wide.high_ms is not None
    assert wide.low_ms <= est.low_ms
    assert wide.high_ms >= est.high_ms


def test_exponential_degradation_is_fitted_as_exponential() -> None:
    config = WearConfig(threshold=8.0)
    rate = math.log(8.0 / 1.0) / 30  # 1.0 -> 8.0 over 30 days
    state = feed(config, lambda d: 1.0 * math.exp(rate * d), days=20, noise=0.05)
    est = estimate(state, config)
    assert est.status == "ok"
    assert est.model == "exponential"
    # With white noise only the 80% interval is a few hours wide at ten days out, and the
    # log transform's small bias (E log y < log E y) can put the truth just outside it; the
    # 95% one holds it. (Known limitation, see the report of bench/analytics_rul.)
    wide = est.intervals[1]
    assert wide.high_ms is not None
    assert wide.low_ms <= crossing_ms(30) <= wide.high_ms
    # A straight line through the same points would put the crossing days later.
    assert est.eta_ms is not None
    assert abs(est.eta_ms - crossing_ms(30)) < 1.5 * DAY_MS


def test_falling_key_reaches_a_lower_threshold() -> None:
    config = WearConfig(threshold=20.0, direction="falling")
    state = feed(config, lambda d: 100.0 - 80.0 * d / 50, days=25, noise=1.0)
    est = estimate(state, config)
    assert est.status == "ok"
    assert est.low_ms is not None
    assert est.high_ms is not None
    assert est.low_ms <= crossing_ms(50) <= est.high_ms


def test_under_100_points_is_not_enough_data() -> None:
    config = WearConfig(threshold=7.0)
    state = feed(config, lambda d: 2.0 + d, days=99 / 24, noise=0.1)  # 99 hourly buckets
    est = estimate(state, config)
    assert est.status == "not_enough_data"
    assert est.points == 99
    assert est.eta_ms is None
    state.update(Reading(START + 99 * HOUR_MS, 6.0))  # the 100th bucket
    assert estimate(state, config).status == "ok"


def test_flat_and_improving_series_are_not_degrading() -> None:
    config = WearConfig(threshold=7.0)
    flat = estimate(feed(config, lambda d: 3.0, days=10, noise=0.2), config)
    improving = estimate(feed(config, lambda d: 5.0 - 0.1 * d, days=10, noise=0.2), config)
    # Rising so slowly that the crossing is beyond the 90-day horizon.
    slow = estimate(feed(config, lambda d: 3.0 + 0.01 * d, days=10, noise=0.05), config)
    assert flat.status == "not_degrading"
    assert improving.status == "not_degrading"
    assert slow.status == "not_degrading"
    assert flat.eta_ms is None


def test_past_threshold() -> None:
    config = WearConfig(threshold=7.0)
    est = estimate(feed(config, lambda d: 2.0 + d, days=10, noise=0.1), config)
    assert est.status == "past_threshold"
    assert est.current is not None
    assert est.current > 7.0


def test_restore_from_state_gives_the_same_estimate() -> None:
    config = WearConfig(threshold=7.0)
    state = feed(config, lambda d: 2.0 + 5.0 * d / 40, days=12, noise=0.2)
    restored = WearState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert estimate(restored, config) == estimate(state, config)
    # And both go on identically.
    for s in (state, restored):
        s.update(Reading(START + 12 * DAY_MS + 5, 4.0))
    assert estimate(restored, config) == estimate(state, config)


def test_nan_and_inf_are_ignored() -> None:
    config = WearConfig(threshold=7.0)
    clean = feed(config, lambda d: 2.0 + 5.0 * d / 40, days=12, noise=0.2)
    dirty = feed(config, lambda d: 2.0 + 5.0 * d / 40, days=12, noise=0.2)
    for i, bad in enumerate([math.nan, math.inf, -math.inf]):
        dirty.update(Reading(START + 12 * DAY_MS - STEP_MS + i, bad))
    assert dirty.ignored == 3
    assert estimate(dirty, config) == estimate(clean, config)


def test_history_is_bounded_by_the_ring() -> None:
    config = WearConfig(threshold=1e6, capacity=200)
    state = feed(config, lambda d: 2.0 + d, days=20, noise=0.1)
    assert len(state.buckets()) == 200
    assert estimate(state, config).points == 200


def feed_wandering(config: WearConfig, days: float, fail_day: float, seed: int) -> WearState:
    """A linear rise 2.0 -> 7.0 at fail_day, white noise and a slow AR(1) wander (hours long)."""
    rng = np.random.default_rng(seed)
    state = WearState.for_config(config)
    phi, wander = 0.99, 0.08
    ar = 0.0
    for i in range(int(days * DAY_MS / STEP_MS)):
        day = i * STEP_MS / DAY_MS
        ar = phi * ar + float(rng.normal(0, wander * math.sqrt(1 - phi**2)))
        value = 2.0 + 5.0 * day / fail_day + ar + float(rng.normal(0, 0.04))
        state.update(Reading(START + i * STEP_MS, value))
    return state


def test_slow_wander_intervals_cover_the_truth_about_as_often_as_they_say() -> None:
    # A Newey-West or AR(1)-corrected band covered about half of these at 80%: detrending
    # hides slow wander from the residuals. The long-run variance puts it back.
    config = WearConfig(threshold=7.0)
    inside = {0.8: 0, 0.95: 0}
    seeds = range(20)
    for seed in seeds:
        est = estimate(feed_wandering(config, days=10, fail_day=20, seed=seed), config)
        assert est.status == "ok"
        for interval in est.intervals:
            high = math.inf if interval.high_ms is None else interval.high_ms
            inside[interval.level] += interval.low_ms <= crossing_ms(20) <= high
    assert inside[0.8] >= 14
    assert inside[0.95] >= 17


def test_intervals_contain_the_point_estimate_and_nest() -> None:
    config = WearConfig(threshold=7.0)
    for seed in range(5):
        est = estimate(feed_wandering(config, days=12, fail_day=20, seed=seed), config)
        assert est.status == "ok"
        assert est.eta_ms is not None
        narrow, wide = est.intervals
        assert narrow.low_ms <= est.eta_ms
        assert narrow.high_ms is None or est.eta_ms <= narrow.high_ms
        assert wide.low_ms <= narrow.low_ms
        assert wide.high_ms is None or (
            narrow.high_ms is not None and narrow.high_ms <= wide.high_ms
        )


def test_constant_exact_and_negative_series_are_answered() -> None:
    config = WearConfig(threshold=7.0)
    constant = estimate(feed(config, lambda d: 3.0, days=10, noise=0.0), config)
    assert constant.status == "not_degrading"
    # A noise-free line: zero residual variance still gives an interval around the crossing.
    exact = estimate(feed(config, lambda d: 2.0 + 5.0 * d / 40, days=10, noise=0.0), config)
    assert exact.status == "ok"
    assert exact.low_ms is not None
    assert exact.high_ms is not None
    assert exact.low_ms <= exact.eta_ms <= exact.high_ms  # type: ignore[operator]
    assert abs(exact.low_ms - crossing_ms(40)) < 2 * HOUR_MS
    # Negative values rule out the log-linear trend; the linear one still answers.
    negative = estimate(feed(config, lambda d: -3.0 + 10.0 * d / 40, days=10, noise=0.3), config)
    assert negative.status == "ok"
    assert negative.model == "linear"


def test_nan_only_history_is_not_enough_data() -> None:
    config = WearConfig(threshold=7.0)
    state = WearState.for_config(config)
    for i in range(200 * 6):
        state.update(Reading(START + i * STEP_MS, math.nan))
    est = estimate(state, config)
    assert est.status == "not_enough_data"
    assert est.points == 0
