"""The pure parts between a finding and a proposal: the settings' validation, the explainer
(template and plug-in with its fallback) and the proposal rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from fleetcore.analytics import explain, proposals
from fleetcore.analytics.config import AnalyticsConfig, KeySettings, parse, sensitivity
from fleetcore.analytics.findings import Finding, Method, Reading
from fleetcore.analytics.wear import DAY_MS, Estimate, Interval

NOW = 1_795_300_000_000


def _finding(method: Method = Method.SPIKE, **extra: Any) -> Finding:
    values: dict[str, Any] = {
        "method": method,
        "key": "vib",
        "ts": NOW,
        "score": 12.5,
        "threshold": 8.0,
        "expected_low": 9.0,
        "expected_high": 11.0,
        "evidence": (Reading(NOW - 60_000, 10.0), Reading(NOW, 30.0)),
    }
    values.update(extra)
    return Finding(**values)


# -- settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "problem"),
    [
        ({"keys": {"vib": {"sensitivity": {"z_treshold": 5}}}}, "unknown sensitivity setting"),
        ({"keys": {"vib": {"wear": {"threshold": float("nan")}}}}, "finite number"),
        ({"keys": {"vib": {"wear": {"threshold": 7, "min_points": 5}}}}, "greater than or equal"),
        ({"keys": {"bad key": {}}}, "pattern"),
        ({"recommend": [{"on": "spike", "kind": "stop", "title": "x"}]}, "needs the command"),
        (
            {"recommend": [{"on": "spike", "kind": "inspect", "title": "x", "method": "m"}]},
            "no method or params",
        ),
        ({"recommend": [{"on": "magic", "kind": "inspect", "title": "x"}]}, "literal_error"),
        ({"keys": {"vib": {}}, "extra": 1}, "Extra inputs"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(stored: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as error:
        AnalyticsConfig.model_validate(stored)
    assert problem in str(error.value) or problem in repr(error.value.errors())
    assert parse(stored).watching is False  # stored anyway (older rules): watches nothing


def test_the_profile_range_is_the_default_range_and_overrides_win() -> None:
    key = {"key": "temp", "type": "number", "min": -10, "max": 80}
    assert (
        sensitivity(KeySettings(), key).range_low,
        sensitivity(KeySettings(), key).range_high,
    ) == (-10.0, 80.0)
    tuned = KeySettings(sensitivity={"range_high": 70.0, "z_threshold": 4.0})
    sens = sensitivity(tuned, key)
    assert (sens.range_low, sens.range_high, sens.z_threshold) == (-10.0, 70.0, 4.0)
    assert sensitivity(KeySettings(), None).range_high is None


# -- explainer -----------------------------------------------------------------------------


def test_the_template_says_what_how_far_and_the_band() -> None:
    text = explain.template(_finding())
    assert text == (
        "vib jumped for a single reading and came back: 30, expected 9 to 11 "
        "(score 12.5, threshold 8.0)."
    )
    stuck = explain.template(
        _finding(Method.STUCK, score=20, expected_low=None, expected_high=None)
    )
    assert stuck == "vib has not changed for 20 readings although it normally varies."


class _Slow:
    async def explain(self, finding: Finding, device_name: str) -> str | None:
        await asyncio.Event().wait()  # a model that never answers: the time limit ends it
        return "never"


class _Broken:
    async def explain(self, finding: Finding, device_name: str) -> str | None:
        raise RuntimeError("model unavailable")


class _Good:
    async def explain(self, finding: Finding, device_name: str) -> str | None:
        return f"  {device_name}: {finding.key} looks odd  "


class _Silent:
    async def explain(self, finding: Finding, device_name: str) -> str | None:
        return ""


async def test_a_plugin_is_used_and_the_template_answers_when_it_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(explain, "PLUGIN_TIMEOUT_S", 0.05)
    finding = _finding()
    assert await explain.explain(_Good(), finding, "Press 4") == "Press 4: vib looks odd"
    for plugin in (_Slow(), _Broken(), _Silent(), None):
        assert await explain.explain(plugin, finding, "Press 4") == explain.template(finding)


def test_a_plugin_is_named_by_module_and_attribute() -> None:
    assert explain.load(None) is None
    assert isinstance(explain.load("tests.test_analytics_advice:_Good"), _Good)
    with pytest.raises(ModuleNotFoundError):
        explain.load("no.such.module:thing")


# -- proposals -----------------------------------------------------------------------------


def _trigger(on: str = "range", severity: str = "critical") -> proposals.Trigger:
    return proposals.Trigger(on, "temp", severity, "temp is out of range.", {"finding": {}})


def test_without_rules_only_inspections_are_proposed() -> None:
    [inspect] = proposals.propose(_trigger(), [], {})
    assert (inspect.kind, inspect.method, inspect.params) == ("inspect", None, None)
    assert inspect.topic == "range:temp:inspect"
    assert inspect.title == "Inspect the machine: temp out of range"
    assert proposals.propose(_trigger("spike", "warning"), [], {}) == []


def test_rules_match_on_trigger_key_and_severity_and_compute_params() -> None:
    config = AnalyticsConfig.model_validate(
        {
            "keys": {"temp": {}},
            "recommend": [
                {
                    "on": "range",
                    "key": "temp",
                    "severity": "critical",
                    "kind": "reduce_speed",
                    "title": "Slow down",
                    "method": "set_speed",
                    "params": {"rpm": {"from_key": "speed", "times": 0.9}, "ramp": True},
                },
                {"on": "range", "key": "other", "kind": "inspect", "title": "Not this key"},
                {"on": "drift", "kind": "inspect", "title": "Not this trigger"},
            ],
        }
    )
    [slow] = proposals.propose(_trigger(), config.recommend, {"speed": 1500.0})
    assert (slow.kind, slow.method, slow.params) == (
        "reduce_speed",
        "set_speed",
        {"rpm": 1350.0, "ramp": True},
    )
    assert slow.evidence["trigger"] == "range"
    # The current speed unknown: no command with a guessed value.
    assert proposals.propose(_trigger(), config.recommend, {}) == []
    # A warning does not match a rule for critical findings (and rules replace the defaults).
    assert proposals.propose(_trigger(severity="warning"), config.recommend, {"speed": 1.0}) == []


def test_wear_warns_inside_the_window_only_and_says_the_interval() -> None:
    def estimate(low_days: float, high_days: float | None) -> Estimate:
        return Estimate(
            status="ok",
            now_ms=NOW,
            eta_ms=NOW + int((low_days + 1) * DAY_MS),
            low_ms=NOW + int(low_days * DAY_MS),
            high_ms=None if high_days is None else NOW + int(high_days * DAY_MS),
            level=0.8,
            model="linear",
            points=150,
            intervals=(Interval(0.8, NOW + int(low_days * DAY_MS), None),),
        )

    assert proposals.wear_trigger("vib", estimate(20, 30), 14 * DAY_MS) is None
    soon = proposals.wear_trigger("vib", estimate(10, 12.5), 14 * DAY_MS)
    assert soon is not None
    assert soon.severity == "warning"
    assert soon.rationale == (
        "vib may reach its failure threshold in 10.0 to 12.5 days "
        "(80% interval, linear trend over 150 hourly points)."
    )
    urgent = proposals.wear_trigger("vib", estimate(3, None), 14 * DAY_MS)
    assert urgent is not None
    assert urgent.severity == "critical"
    assert "3.0 to later" in urgent.rationale
    past = proposals.wear_trigger("vib", Estimate(status="past_threshold"), 14 * DAY_MS)
    assert past is not None
    assert past.severity == "critical"
    for status in ("not_enough_data", "not_degrading"):
        assert proposals.wear_trigger("vib", Estimate(status=status), 14 * DAY_MS) is None
