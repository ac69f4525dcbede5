"""Rule conditions and the alert state machine, as pure code (no database)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from fleetcore.rules.conditions import Condition, DeviceView, compile_condition, needs_of
from fleetcore.rules.machine import Compiled, Step, Track, step
from fleetcore.rules.schemas import RuleIn

CONDITION: TypeAdapter[Any] = TypeAdapter(Condition)
MIN = 60_000


def check(condition: dict[str, Any], values: dict[str, Any], now: int = 0) -> bool:
    view = DeviceView()
    for key, value in values.items():
        view.update(key, now, value, None)
    return compile_condition(CONDITION.validate_python(condition))(view, now)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">", 30, False),
        (">", 29.9, True),
        (">=", 30, True),
        ("<", 30, False),
        ("<=", 30, True),
        ("==", 30, True),
        ("!=", 30, False),
        ("!=", 31, True),
    ],
)
def test_threshold_compares_the_latest_value(op: str, value: float, expected: bool) -> None:
    assert check({"type": "threshold", "key": "t", "op": op, "value": value}, {"t": 30}) is expected


def test_threshold_without_a_type_is_the_documented_shorthand() -> None:
    assert check({"key": "t", "op": ">", "value": 1}, {"t": 2})
    assert not check({"key": "t", "op": ">", "value": 1}, {"t": 0})


def test_threshold_ignores_missing_keys_and_values_of_another_type() -> None:
    assert not check({"key": "t", "op": ">", "value": 1}, {})
    assert not check({"key": "t", "op": ">", "value": 1}, {"t": "hot"})
    assert not check({"key": "t", "op": ">", "value": 1}, {"t": True})
    assert check({"key": "door", "op": "==", "value": "open"}, {"door": "open"})
    assert check({"key": "alarm", "op": "==", "value": True}, {"alarm": True})


def test_outside_range() -> None:
    cond = {"type": "outside_range", "key": "t", "min": 2, "max": 8}
    assert check(cond, {"t": 1.9})
    assert check(cond, {"t": 8.1})
    assert not check(cond, {"t": 2})
    assert not check(cond, {"t": 8})
    assert not check(cond, {"t": 5})


def rate_view(samples: list[tuple[int, float]], window_ms: int) -> DeviceView:
    view = DeviceView()
    for ts, value in samples:
        view.update("t", ts, value, window_ms)
    return view


def test_rate_of_change_over_the_window() -> None:
    cond = CONDITION.validate_python(
        {"type": "rate_of_change", "key": "t", "window_s": 600, "op": ">", "value": 0.5}
    )
    rising = compile_condition(cond)
    # +6 in 10 minutes = 0.6 per minute
    assert rising(rate_view([(0, 20), (5 * MIN, 23), (10 * MIN, 26)], 600_000), 10 * MIN)
    # +4 in 10 minutes = 0.4 per minute
    assert not rising(rate_view([(0, 20), (10 * MIN, 24)], 600_000), 10 * MIN)
    # samples older than the window do not count: +1 in the last 10 minutes
    assert not rising(rate_view([(0, 0), (11 * MIN, 30), (21 * MIN, 31)], 600_000), 21 * MIN)
    # one sample has no rate
    assert not rising(rate_view([(0, 20)], 600_000), 0)


def test_rate_per_second_and_falling() -> None:
    cond = CONDITION.validate_python(
        {
            "type": "rate_of_change",
            "key": "p",
            "window_s": 60,
            "op": "<",
            "value": -1,
            "per": "second",
        }
    )
    view = DeviceView()
    view.update("p", 0, 100, 60_000)
    view.update("p", 10_000, 80, 60_000)  # -2 per second
    assert compile_condition(cond)(view, 10_000)


def test_a_rate_window_shorter_than_the_one_the_view_keeps() -> None:
    """Two rate rules on one key: the view keeps the longer window, and the shorter one
    starts at its own first sample inside it (not at the oldest kept)."""
    short, long = (
        compile_condition(
            CONDITION.validate_python(
                {"type": "rate_of_change", "key": "t", "window_s": w, "op": ">", "value": 0.5}
            )
        )
        for w in (300, 1200)
    )
    # rising 0.1 per minute for 15 minutes, then 1.5 per minute for the last 5
    samples = [(m * MIN, 20 + 0.1 * m) for m in range(16)]
    samples += [((15 + m) * MIN, 21.5 + 1.5 * m) for m in range(1, 6)]
    view = rate_view(samples, 1_200_000)
    assert len(view.windows["t"]) == len(samples)  # the longer window keeps them all
    assert short(view, 20 * MIN)  # from the sample at 15 min: +7.5 in 5 minutes
    assert not long(view, 20 * MIN)  # +9 in 20 minutes: 0.45 per minute
    boundary = rate_view([(0, 0), (5 * MIN, 1), (10 * MIN, 4)], 1_200_000)
    assert short(boundary, 10 * MIN)  # from 5 min: +3 in 5 minutes
    assert not long(boundary, 10 * MIN)  # from 0: +4 in 10 minutes


def test_no_data_of_a_key_or_of_the_device() -> None:
    any_key = compile_condition(CONDITION.validate_python({"type": "no_data", "minutes": 5}))
    one_key = compile_condition(
        CONDITION.validate_python({"type": "no_data", "minutes": 5, "key": "t"})
    )
    view = DeviceView(since=0)
    assert not any_key(view, 4 * MIN)
    assert any_key(view, 5 * MIN)
    view.update("h", 10 * MIN, 50, None)
    assert not any_key(view, 14 * MIN)
    assert any_key(view, 15 * MIN)
    assert one_key(view, 14 * MIN)  # "t" never came
    view.update("t", 14 * MIN, 1, None)
    assert not one_key(view, 18 * MIN)
    assert one_key(view, 19 * MIN)


def test_all_and_any() -> None:
    hot = {"key": "t", "op": ">", "value": 30}
    wet = {"key": "h", "op": ">", "value": 80}
    assert check({"type": "all", "conditions": [hot, wet]}, {"t": 31, "h": 81})
    assert not check({"type": "all", "conditions": [hot, wet]}, {"t": 31, "h": 79})
    assert check({"type": "any", "conditions": [hot, wet]}, {"t": 20, "h": 81})
    assert not check({"type": "any", "conditions": [hot, wet]}, {"t": 20, "h": 20})
    nested = {"type": "any", "conditions": [{"type": "all", "conditions": [hot, wet]}, hot]}
    assert check(nested, {"t": 31})
    needs = needs_of(CONDITION.validate_python(nested))
    assert needs.keys == {"t", "h"}
    assert not needs.no_data


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"key": "t", "op": ">", "value": "hot"}, "must be a number"),
        ({"key": "t", "op": "~", "value": 1}, "op"),
        ({"type": "outside_range", "key": "t", "min": 5, "max": 5}, "min must be below max"),
        ({"type": "rate_of_change", "key": "t", "window_s": 0, "op": ">", "value": 1}, "window_s"),
        ({"type": "no_data", "minutes": 0}, "minutes"),
        ({"type": "all", "conditions": []}, "conditions"),
        ({"type": "nope"}, "type"),
        ({"type": "threshold", "key": "t", "op": ">", "value": 1, "extra": 1}, "extra"),
    ],
)
def test_bad_conditions_are_refused_with_a_reason(condition: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        RuleIn.model_validate(
            {
                "name": "r",
                "device_id": "00000000-0000-0000-0000-000000000001",
                "condition": condition,
            }
        )
    assert message in str(error.value)


def test_depth_and_size_are_bounded() -> None:
    leaf = {"key": "t", "op": ">", "value": 1}
    deep: dict[str, Any] = leaf
    for _ in range(4):
        deep = {"type": "all", "conditions": [deep]}
    with pytest.raises(ValidationError, match="nest at most"):
        RuleIn.model_validate(
            {"name": "r", "device_id": "00000000-0000-0000-0000-000000000001", "condition": deep}
        )
    wide = {"type": "any", "conditions": [{"type": "all", "conditions": [leaf] * 15}] * 2}
    with pytest.raises(ValidationError, match="at most 20"):
        RuleIn.model_validate(
            {"name": "r", "device_id": "00000000-0000-0000-0000-000000000001", "condition": wide}
        )


def test_a_rule_has_exactly_one_scope() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        RuleIn.model_validate({"name": "r", "condition": {"key": "t", "op": ">", "value": 1}})
    with pytest.raises(ValidationError, match="exactly one"):
        RuleIn.model_validate(
            {
                "name": "r",
                "device_id": "00000000-0000-0000-0000-000000000001",
                "profile_id": "00000000-0000-0000-0000-000000000002",
                "condition": {"key": "t", "op": ">", "value": 1},
            }
        )


# -- the state machine -------------------------------------------------------------------


def machine(
    condition: dict[str, Any], clear: dict[str, Any] | None = None, duration_s: int = 0
) -> Compiled:
    return Compiled(
        condition=compile_condition(CONDITION.validate_python(condition)),
        clear=compile_condition(CONDITION.validate_python(clear)) if clear else None,
        duration_ms=duration_s * 1000,
    )


def run(
    rule: Compiled, values: list[tuple[int, float]], track: Track | None = None
) -> list[tuple[int, Step]]:
    """Feed (ts, t) readings; the steps that happened, with their times."""
    track = track or Track()
    view = DeviceView()
    steps = []
    for ts, value in values:
        view.update("t", ts, value, None)
        result = step(rule, track, view, ts)
        if result is not None:
            steps.append((ts, result))
    return steps


HOT = {"key": "t", "op": ">", "value": 30}


def test_opens_at_once_and_clears_when_the_condition_ends() -> None:
    steps = run(machine(HOT), [(0, 20), (1, 31), (2, 35), (3, 29)])
    assert steps == [(1, Step.OPENED), (3, Step.CLEARED)]


def test_duration_the_condition_must_hold_before_it_fires() -> None:
    rule = machine(HOT, duration_s=60)
    # holds 59 s, dips, holds again 60 s
    steps = run(
        rule, [(0, 31), (59_000, 31), (60_000, 20), (70_000, 31), (100_000, 32), (130_000, 33)]
    )
    assert steps == [(130_000, Step.OPENED)]


def test_hysteresis_keeps_a_dancing_value_from_flapping() -> None:
    dancing = [(i * 1000, 30.5 if i % 2 else 29.5) for i in range(20)]
    without = run(machine(HOT), dancing)
    assert [s for _, s in without].count(Step.OPENED) == 10  # flaps without hysteresis
    with_clear = run(machine(HOT, clear={"key": "t", "op": "<", "value": 25}), dancing)
    # one alert; each return above 30 counts as a repeat
    assert [s for _, s in with_clear] == [Step.OPENED] + [Step.REPEATED] * 9
    after = run(
        machine(HOT, clear={"key": "t", "op": "<", "value": 25}),
        [*dancing, (30_000, 24), (31_000, 31)],
    )
    assert after[-2:] == [(30_000, Step.CLEARED), (31_000, Step.OPENED)]


def test_a_repeat_counts_only_a_new_run_of_the_condition() -> None:
    rule = machine(HOT, clear={"key": "t", "op": "<", "value": 25})
    steps = run(rule, [(0, 31), (1, 32), (2, 33), (3, 28), (4, 31), (5, 31)])
    assert steps == [(0, Step.OPENED), (4, Step.REPEATED)]


def test_a_pending_duration_continues_from_a_saved_track() -> None:
    rule = machine(HOT, duration_s=60)
    saved = Track()
    run(rule, [(0, 31), (30_000, 31)], saved)
    restored = Track(saved.pending_since, saved.latched, saved.open)  # as rule_states keeps it
    assert run(rule, [(60_000, 31)], restored) == [(60_000, Step.OPENED)]
    assert run(rule, [(70_000, 31)], restored) == []  # open stays open: not opened again
