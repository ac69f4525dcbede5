"""The streaming series detectors on crafted series: each method finds what it should and
not clean noise, anomalies are reported once (hysteresis), bad values are counted and
ignored, and a detector saved and restored anywhere continues exactly as one that never
stopped."""

from __future__ import annotations

import json
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetcore.analytics.detect import Sensitivity, SeriesDetector
from fleetcore.analytics.findings import Finding, Method, Reading

MINUTE = 60_000
T0 = 1_767_225_600_000


def noise(n: int, *, seed: int = 7, level: float = 10.0, sd: float = 0.3) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sd) for _ in range(n)]


def run(values: list[float], sens: Sensitivity | None = None, step: int = MINUTE) -> list[Finding]:
    detector = SeriesDetector("current", sens)
    found: list[Finding] = []
    for i, v in enumerate(values):
        found += detector.observe(Reading(T0 + i * step, v))
    return found


def methods(found: list[Finding]) -> list[Method]:
    return [f.method for f in found]


def test_clean_noise_gives_no_findings() -> None:
    assert run(noise(3 * 1440, seed=1)) == []


def test_a_constant_series_gives_no_findings() -> None:
    assert run([5.0] * 2000) == []
    assert run([0.0] * 2000) == []


def test_a_spike_is_reported_once_one_reading_later() -> None:
    values = noise(600)
    values[400] += 6.0  # 20 sigmas
    found = run(values)
    assert methods(found) == [Method.SPIKE]
    spike = found[0]
    assert spike.ts == T0 + 401 * MINUTE  # confirmed by the next reading
    assert spike.score > spike.threshold
    assert spike.expected_low is not None
    assert spike.expected_high is not None
    assert spike.expected_low < 10.0 < spike.expected_high
    assert any(r.value == values[400] for r in spike.evidence)


def test_a_level_shift_is_a_drift_and_not_a_spike() -> None:
    values = noise(3000)
    values[2000:] = [v + 1.5 for v in values[2000:]]  # 5 sigmas, for good
    found = run(values)
    assert Method.SPIKE not in methods(found)
    drifts = [f for f in found if f.method is Method.DRIFT]
    assert len(drifts) == 1
    assert T0 + 2000 * MINUTE <= drifts[0].ts <= T0 + 2030 * MINUTE
    assert 0 < len(drifts[0].evidence) <= 20


def test_drift_waits_for_the_daily_baseline_unless_there_is_none() -> None:
    values = noise(1200)
    values[800:] = [v + 1.5 for v in values[800:]]
    assert Method.DRIFT not in methods(run(values))  # the daily baseline is not ready yet
    drifts = [f for f in run(values, Sensitivity(seasonal=False)) if f.method is Method.DRIFT]
    assert [T0 + 800 * MINUTE <= f.ts <= T0 + 830 * MINUTE for f in drifts] == [True]


def test_a_ramp_is_a_drift_before_it_ends() -> None:
    values = noise(3500)
    # 5 sigmas over 100 readings, faster than the offset follows; slower ramps are absorbed
    # (see Sensitivity.offset_alpha) and found only when they end abruptly
    values[2000:2100] = [v + 1.5 * (i / 100) for i, v in enumerate(values[2000:2100])]
    values[2100:] = [v + 1.5 for v in values[2100:]]
    found = run(values)
    drifts = [f for f in found if f.method is Method.DRIFT]
    assert drifts
    assert T0 + 2000 * MINUTE <= drifts[0].ts <= T0 + 2100 * MINUTE
    assert all(f.ts >= T0 + 2000 * MINUTE for f in found)


def test_a_stuck_sensor_is_reported_once_after_the_run() -> None:
    values = noise(800)
    values[500:700] = [values[499]] * 200
    found = run(values)
    assert methods(found) == [Method.STUCK]
    assert found[0].ts == T0 + 518 * MINUTE  # the 20th equal reading (499 and 500..518)


def test_a_series_that_often_repeats_is_not_stuck() -> None:
    values = [10.0 if (i // 7) % 2 else 10.5 for i in range(1000)] + [10.0] * 30
    assert Method.STUCK not in methods(run(values))


def test_a_sustained_outlier_run_is_reported_once_until_it_clears() -> None:
    values = noise(1200)
    for start in (500, 900):
        values[start : start + 10] = [v + 4.0 for v in values[start : start + 10]]
    sens = Sensitivity(drift=False, spike=False)
    found = run(values, sens)
    robust = [f for f in found if f.method is Method.ROBUST_Z]
    ewma = [f for f in found if f.method is Method.EWMA]
    assert [f.ts for f in robust] == [T0 + 501 * MINUTE, T0 + 901 * MINUTE]
    assert len(ewma) == 2


def test_an_anomaly_that_never_clears_is_reported_once() -> None:
    values = noise(1200)
    values[500:] = [v + 30.0 for v in values[500:]]
    found = run(values, Sensitivity(drift=False))
    assert methods(found).count(Method.ROBUST_Z) == 1
    assert methods(found).count(Method.EWMA) == 1


def test_a_switched_off_method_reports_nothing() -> None:
    values = noise(600)
    values[400] += 6.0
    assert run(values, Sensitivity(spike=False)) == []


def test_range_violations_are_reported_on_entry_only() -> None:
    values = noise(300)
    values[100:110] = [20.0] * 10
    values[200] = -5.0
    found = run(
        values,
        Sensitivity(
            range_low=0.0,
            range_high=15.0,
            spike=False,
            drift=False,
            robust_z=False,
            ewma=False,
            stuck=False,
        ),
    )
    assert [(f.method, f.ts) for f in found] == [
        (Method.RANGE, T0 + 100 * MINUTE),
        (Method.RANGE, T0 + 200 * MINUTE),
    ]
    assert found[0].severity == "critical"
    assert found[0].score == 5.0


def test_the_daily_baseline_is_used_once_every_bin_has_data() -> None:
    step = 5 * MINUTE
    per_day = 288
    rng = random.Random(3)
    values = [
        20.0 + 5.0 * math.sin(2 * math.pi * i / per_day) + rng.gauss(0, 0.2)
        for i in range(per_day * 5)
    ]
    detector = SeriesDetector("temperature")
    found: list[Finding] = []
    for i, v in enumerate(values):
        found += detector.observe(Reading(T0 + i * step, v))
    assert found == []
    assert detector.baseline.ready()
    noon = T0 + 6 * 3_600_000
    assert abs(detector.baseline.expected(noon) - 25.0) < 0.5


def test_bad_values_are_ignored_and_counted() -> None:
    detector = SeriesDetector("current")
    for i, v in enumerate(noise(100)):
        assert detector.observe(Reading(T0 + i * MINUTE, v)) == []
    later = T0 + 200 * MINUTE
    for bad in (math.nan, math.inf, -math.inf, 1e300, -1e20):
        assert detector.observe(Reading(later, bad)) == []
    assert detector.observe(Reading(T0, 10.0)) == []  # older than the last accepted
    assert detector.ignored == {"nan": 1, "inf": 2, "huge": 2, "out_of_order": 1}
    json.dumps(detector.state(), allow_nan=False)


def test_irregular_timestamps_do_not_disturb_it() -> None:
    rng = random.Random(5)
    values = noise(1500, seed=5)
    values[1000] += 6.0
    detector = SeriesDetector("current")
    found: list[Finding] = []
    ts = T0
    for v in values:
        ts += rng.choice([1_000, 30_000, MINUTE, 7 * MINUTE, 3 * 3_600_000])
        found += detector.observe(Reading(ts, v))
    assert methods(found) == [Method.SPIKE]


def restored(detector: SeriesDetector) -> SeriesDetector:
    return SeriesDetector.from_state(json.loads(json.dumps(detector.state(), allow_nan=False)))


def test_the_state_is_small() -> None:
    detector = SeriesDetector("current")
    for i, v in enumerate(noise(5000)):
        detector.observe(Reading(T0 + i * MINUTE, v))
    assert len(json.dumps(detector.state())) < 6_000


# Segments of (shift, length) over noise: shifts make drifts and outlier runs, 0.0 with a
# special value makes spikes, stuck runs and bad readings.
segments_st = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 1.5, -1.5, 20.0]),
        st.integers(min_value=1, max_value=60),
        st.sampled_from([None, None, None, 30.0, "stuck", math.nan, math.inf, 1e300]),
    ),
    min_size=1,
    max_size=12,
)


def stream_of(segments: list[tuple[float, int, float | str | None]], seed: int) -> list[float]:
    values = noise(150, seed=seed)  # warmed up, so the methods are live around the cut
    rng = random.Random(seed)
    for shift, length, special in segments:
        if special == "stuck":
            values += [values[-1]] * length
        elif special is not None:
            values += [float(special)] + [10.0 + rng.gauss(0, 0.3) for _ in range(length - 1)]
        else:
            values += [10.0 + shift + rng.gauss(0, 0.3) for _ in range(length)]
    return values


@settings(max_examples=60, deadline=None)
@given(
    segments=segments_st,
    cut=st.integers(min_value=0, max_value=800),
    seed=st.integers(min_value=0, max_value=3),
    seasonal=st.booleans(),
)
def test_saving_and_restoring_anywhere_gives_the_same_findings(
    segments: list[tuple[float, int, float | str | None]], cut: int, seed: int, seasonal: bool
) -> None:
    stream = [Reading(T0 + i * MINUTE, v) for i, v in enumerate(stream_of(segments, seed))]
    cut = min(cut + 100, len(stream))
    # Short counts so that every method is live within a few hundred readings (seasonal off:
    # drift does not wait for a day of data).
    sens = Sensitivity(
        range_low=0.0,
        range_high=20.0,
        stuck_samples=5,
        warmup=10,
        drift_quiet=20,
        seasonal=seasonal,
    )
    one = SeriesDetector("k", sens)
    whole = [f for r in stream for f in one.observe(r)]
    first = SeriesDetector("k", sens)
    split = [f for r in stream[:cut] for f in first.observe(r)]
    second = restored(first)
    split += [f for r in stream[cut:] for f in second.observe(r)]
    assert split == whole
    assert second.state() == one.state()
