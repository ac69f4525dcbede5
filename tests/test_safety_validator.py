"""The safety validator: every rule, both sides of every boundary, and a property against an
independent re-implementation of the limits."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetcore.safety.inputs import (
    EFFECTIVE_STATUSES,
    OPEN_STATUSES,
    ROLE_RANK,
    ActiveAlert,
    Approval,
    PastCommand,
    SafetyContext,
    SafetyRequest,
)
from fleetcore.safety.policy import (
    SEVERITIES,
    AlertCondition,
    Interlock,
    MethodPolicy,
    ParamRule,
    SafetyPolicy,
)
from fleetcore.safety.validator import validate
from fleetcore.safety.verdict import Code, Verdict

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UP = math.inf
DOWN = -math.inf

SPINDLE: dict[str, Any] = {
    "methods": {
        "set_speed": {
            "params": {
                "rpm": {
                    "type": "number",
                    "min": 0,
                    "max": 3000,
                    "key": "spindle_speed",
                    "max_step": 200,
                    "max_step_relative": 0.25,
                    "max_change_per_hour": 500,
                }
            }
        },
        "reduce_speed": {
            "params": {"rpm": {"type": "number", "min": 0, "key": "spindle_speed"}},
        },
        "inspect": {"params": {"note": {"type": "string", "required": False, "max_length": 10}}},
        "set_mode": {
            "params": {
                "mode": {"type": "string", "allowed": ["auto", "manual"]},
                "passes": {"type": "integer", "required": False, "min": 1, "max": 10},
                "dry_run": {"type": "boolean", "required": False},
                "gear": {"type": "number", "required": False, "allowed": [1, 2.5]},
            }
        },
        "start": {},
        "stop": {"critical": True},
    },
    "interlocks": [
        {
            "name": "no speed-up on a critical alert",
            "method": "set_speed",
            "param": "rpm",
            "direction": "increase",
            "when": {"severity_at_least": "critical"},
        },
        {"name": "no start while overheating", "method": "start", "when": {"rule": "Overheat"}},
        {
            "name": "nothing on a vibration alert",
            "when": {"key": "vibration", "severity_at_least": "major"},
        },
    ],
}
POLICY = SafetyPolicy.model_validate(SPINDLE)
ALICE = Approval(by="alice", role="operator")
BOB = Approval(by="bob", role="manager")


def request(
    method: object = "set_speed",
    params: object = None,
    *,
    by: object = "analytics",
    approvals: Any = (ALICE,),
) -> SafetyRequest:
    return SafetyRequest(
        method=method,
        params={"rpm": 1600} if params is None else params,
        requested_by=by,
        approvals=approvals,
    )


def context(
    speed: object = 1500,
    *,
    recent: tuple[PastCommand, ...] = (),
    alerts: tuple[ActiveAlert, ...] = (),
    now: datetime = NOW,
) -> SafetyContext:
    return SafetyContext(now=now, values={"spindle_speed": speed}, recent=recent, alerts=alerts)


def sent(
    minutes_ago: float, rpm: object, status: str = "succeeded", method: str = "set_speed"
) -> PastCommand:
    return PastCommand(
        at=NOW - timedelta(minutes=minutes_ago), method=method, params={"rpm": rpm}, status=status
    )


def check(req: SafetyRequest, ctx: SafetyContext | None = None, policy: Any = POLICY) -> Verdict:
    return validate(policy, req, ctx or context())


def codes(req: SafetyRequest, ctx: SafetyContext | None = None, policy: Any = POLICY) -> list[str]:
    return check(req, ctx, policy).codes


def test_a_sound_request_passes() -> None:
    verdict = check(request())
    assert verdict.passed, verdict.reasons
    assert verdict.codes == []


# --- the policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [None, {}, SafetyPolicy()])
def test_the_empty_policy_denies_everything(policy: Any) -> None:
    for method in ("set_speed", "stop", "start", "anything"):
        verdict = validate(policy, request(method, {}), context())
        assert verdict.codes == ["METHOD_NOT_ALLOWED"]


def test_an_invalid_policy_denies_with_its_errors() -> None:
    broken = {"methods": {"set_speed": {"params": {"rpm": {"type": "number", "min": 5, "max": 1}}}}}
    verdict = validate(broken, request(), context())
    assert verdict.codes == ["POLICY_INVALID"]
    assert verdict.reasons[0].details["errors"]
    assert validate({"methods": []}, request(), context()).codes == ["POLICY_INVALID"]


def test_a_policy_round_trips_through_json() -> None:
    stored = POLICY.model_dump_json(exclude_none=True)
    assert SafetyPolicy.model_validate_json(stored) == POLICY


@pytest.mark.parametrize(
    "rule",
    [
        {"type": "number", "min": 5, "max": 4.999},
        {"type": "string", "min": 1},
        {"type": "boolean", "max_step": 1},
        {"type": "string", "max_change_per_hour": 1},
        {"type": "number", "max_length": 3},
        {"type": "integer", "allowed": [1, 1.5]},
        {"type": "number", "allowed": [True]},
        {"type": "string", "allowed": [1]},
        {"type": "number", "allowed": []},
        {"type": "number", "min": math.nan},
        {"type": "number", "max": math.inf},
        {"type": "number", "max_step": -1},
        {"type": "number", "max_step_relative": math.nan},
        {"type": "number", "max": 1e16},
        {"type": "number", "unknown_field": 1},
        {"type": "float"},
    ],
)
def test_a_policy_refuses_incoherent_param_rules(rule: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ParamRule.model_validate(rule)


@pytest.mark.parametrize(
    "interlock",
    [
        {"name": "typo", "method": "set_sped"},
        {"name": "typo", "param": "rmp"},
        {"name": "typo", "method": "start", "param": "rpm"},
        {"name": "no param", "direction": "increase"},
        {"name": "string", "method": "inspect", "param": "note", "direction": "increase"},
        {"name": "bad severity", "when": {"severity_at_least": "urgent"}},
    ],
)
def test_an_interlock_must_name_what_the_policy_defines(interlock: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SafetyPolicy.model_validate({**SPINDLE, "interlocks": [interlock]})


# --- the request's shape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "req",
    [
        request(method=None),
        request(method=""),
        request(method="x" * 65),
        request(method="set\x00speed"),
        request(method=["set_speed"]),
        request(params=[1600]),
        request(params="rpm=1600"),
        request(params={1: 1600}),
        request(by=""),
        request(by=None),
        request(by=" alice"),
        request(approvals="alice"),
        request(approvals=None),
        request(approvals=[{"by": "alice", "role": "operator"}]),
        request(approvals=[Approval(by="", role="operator")]),
        request(approvals=[Approval(by="alice", role=None)]),
        request(approvals=[ALICE] * 11),
        request(params={f"p{i}": i for i in range(1000)}),
    ],
)
def test_a_malformed_request_is_a_reason_not_an_exception(req: SafetyRequest) -> None:
    verdict = check(req)
    assert not verdict.passed
    assert set(verdict.codes) == {"REQUEST_MALFORMED"}


def test_an_unknown_method_is_refused() -> None:
    verdict = check(request("self_destruct", {}))
    assert verdict.codes == ["METHOD_NOT_ALLOWED"]
    assert "set_speed" in verdict.reasons[0].details["allowed"]


# --- params -------------------------------------------------------------------------------------


def test_extra_params_are_refused() -> None:
    verdict = check(request(params={"rpm": 1600, "force": True, "override": 1}))
    assert verdict.codes == ["PARAM_UNKNOWN"]
    assert verdict.reasons[0].details["params"] == ["force", "override"]


def test_missing_params_are_refused_optional_ones_not() -> None:
    assert codes(request(params={})) == ["PARAM_MISSING"]
    assert codes(request("set_mode", {})) == ["PARAM_MISSING"]
    assert codes(request("set_mode", {"mode": "auto"})) == []
    assert codes(request("inspect", {})) == []


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("set_speed", {"rpm": "1600"}),
        ("set_speed", {"rpm": True}),
        ("set_speed", {"rpm": None}),
        ("set_speed", {"rpm": [1600]}),
        ("set_mode", {"mode": 1}),
        ("set_mode", {"mode": "auto", "passes": 2.5}),
        ("set_mode", {"mode": "auto", "passes": "2"}),
        ("set_mode", {"mode": "auto", "dry_run": 1}),
        ("set_mode", {"mode": "auto", "dry_run": "true"}),
        ("inspect", {"note": 5}),
    ],
)
def test_ill_typed_params_are_refused(method: str, params: dict[str, Any]) -> None:
    assert codes(request(method, params)) == ["PARAM_WRONG_TYPE"]


def test_an_integral_float_is_an_integer() -> None:
    assert codes(request("set_mode", {"mode": "auto", "passes": 2.0})) == []


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused(value: float) -> None:
    assert codes(request(params={"rpm": value})) == ["PARAM_NOT_FINITE"]


@pytest.mark.parametrize("value", [1e16, -1e300, 10**400, -(10**30), 1.7976931348623157e308])
def test_huge_numbers_are_refused(value: float) -> None:
    assert codes(request(params={"rpm": value})) == ["PARAM_TOO_LARGE"]


def test_min_and_max_are_inclusive() -> None:
    wide = {"methods": {"go": {"params": {"x": {"type": "number", "min": -2.5, "max": 7.1}}}}}
    assert codes(request("go", {"x": -2.5}), policy=wide) == []
    assert codes(request("go", {"x": 7.1}), policy=wide) == []
    assert codes(request("go", {"x": math.nextafter(-2.5, DOWN)}), policy=wide) == [
        "PARAM_BELOW_MIN"
    ]
    assert codes(request("go", {"x": math.nextafter(7.1, UP)}), policy=wide) == ["PARAM_ABOVE_MAX"]


def test_integer_bounds() -> None:
    assert codes(request("set_mode", {"mode": "auto", "passes": 1})) == []
    assert codes(request("set_mode", {"mode": "auto", "passes": 10})) == []
    assert codes(request("set_mode", {"mode": "auto", "passes": 0})) == ["PARAM_BELOW_MIN"]
    assert codes(request("set_mode", {"mode": "auto", "passes": 11})) == ["PARAM_ABOVE_MAX"]


def test_allowed_values() -> None:
    assert codes(request("set_mode", {"mode": "manual"})) == []
    assert codes(request("set_mode", {"mode": "Manual"})) == ["PARAM_VALUE_NOT_ALLOWED"]
    assert codes(request("set_mode", {"mode": "auto", "gear": 2.5})) == []
    assert codes(request("set_mode", {"mode": "auto", "gear": 1.0})) == []
    assert codes(request("set_mode", {"mode": "auto", "gear": math.nextafter(2.5, UP)})) == [
        "PARAM_VALUE_NOT_ALLOWED"
    ]


def test_string_length() -> None:
    assert codes(request("inspect", {"note": "x" * 10})) == []
    assert codes(request("inspect", {"note": "x" * 11})) == ["PARAM_TOO_LONG"]


def test_every_param_problem_is_reported() -> None:
    verdict = check(request("set_mode", {"passes": 0, "dry_run": "no", "extra": 1}))
    assert verdict.codes == [
        "PARAM_UNKNOWN",
        "PARAM_MISSING",
        "PARAM_BELOW_MIN",
        "PARAM_WRONG_TYPE",
    ]


# --- per-step limits -------------------------------------------------------------------------


def test_the_absolute_step_limit_is_inclusive() -> None:
    assert codes(request(params={"rpm": 1700})) == []
    assert codes(request(params={"rpm": 1300})) == []
    assert codes(request(params={"rpm": math.nextafter(1700, UP)})) == ["STEP_TOO_LARGE"]
    assert codes(request(params={"rpm": math.nextafter(1300, DOWN)})) == ["STEP_TOO_LARGE"]


def test_decimal_steps_are_measured_exactly() -> None:
    fine = {"methods": {"trim": {"params": {"x": {"type": "number", "max_step": 0.2}}}}}
    ctx = SafetyContext(now=NOW, values={"x": 10.1})
    assert codes(request("trim", {"x": 10.3}), ctx, fine) == []  # 10.3 - 10.1 > 0.2 in floats
    assert codes(request("trim", {"x": math.nextafter(10.3, UP)}), ctx, fine) == ["STEP_TOO_LARGE"]


def test_the_relative_step_limit_is_inclusive() -> None:
    relative = {
        "methods": {"trim": {"params": {"x": {"type": "number", "max_step_relative": 0.1}}}}
    }
    ctx = SafetyContext(now=NOW, values={"x": 1000})
    assert codes(request("trim", {"x": 1100}), ctx, relative) == []
    assert codes(request("trim", {"x": 900}), ctx, relative) == []
    assert codes(request("trim", {"x": math.nextafter(1100, UP)}), ctx, relative) == [
        "STEP_TOO_LARGE_RELATIVE"
    ]
    assert codes(request("trim", {"x": 899.9999}), ctx, relative) == ["STEP_TOO_LARGE_RELATIVE"]
    negative = SafetyContext(now=NOW, values={"x": -1000})
    assert codes(request("trim", {"x": -1100}), negative, relative) == []
    from_zero = SafetyContext(now=NOW, values={"x": 0})
    assert codes(request("trim", {"x": 0}), from_zero, relative) == []
    assert codes(request("trim", {"x": 1e-9}), from_zero, relative) == ["STEP_TOO_LARGE_RELATIVE"]


def test_both_step_limits_must_hold() -> None:
    # max_step 200 and 25 % of 600 = 150: the relative one binds at a low speed.
    assert codes(request(params={"rpm": 750}), context(600)) == []
    assert codes(request(params={"rpm": 751}), context(600)) == ["STEP_TOO_LARGE_RELATIVE"]


@pytest.mark.parametrize("speed", [None, "1500", True, math.nan, math.inf, 1e300])
def test_a_step_from_an_unknown_current_value_is_refused(speed: object) -> None:
    assert codes(request(), context(speed)) == ["CURRENT_VALUE_UNKNOWN"]


def test_no_current_value_at_all_is_refused() -> None:
    empty = SafetyContext(now=NOW)
    assert codes(request(), empty) == ["CURRENT_VALUE_UNKNOWN"]


def test_a_step_is_also_measured_from_an_open_commands_target() -> None:
    queued = sent(5, 1300, status="queued")
    verdict = check(request(params={"rpm": 1700}), context(1500, recent=(sent(90, 1500), queued)))
    assert "STEP_TOO_LARGE" in verdict.codes
    step = next(r for r in verdict.reasons if r.code is Code.STEP_TOO_LARGE)
    assert step.details["origin"] == "pending"
    assert step.details["from"] == 1300
    done = sent(5, 1300, status="succeeded")
    assert "STEP_TOO_LARGE" not in codes(
        request(params={"rpm": 1500}), context(1500, recent=(sent(90, 1500), done))
    )


# --- hourly limits ---------------------------------------------------------------------------


def test_small_steps_add_up_past_the_hourly_limit() -> None:
    # 1500 -> 1650 -> 1800 -> 1950 in the hour (450), each step within 200.
    recent = (sent(120, 1500), sent(50, 1650), sent(40, 1800), sent(30, 1950))
    ctx = context(1950, recent=recent)
    assert codes(request(params={"rpm": 2000}), ctx) == []  # exactly 500
    assert codes(request(params={"rpm": math.nextafter(2000, UP)}), ctx) == ["RATE_TOO_HIGH"]
    assert codes(request(params={"rpm": 2100}), ctx) == ["RATE_TOO_HIGH"]
    # Going back down is movement too.
    assert codes(request(params={"rpm": 1900}), ctx) == []
    assert codes(request(params={"rpm": 1899}), ctx) == ["RATE_TOO_HIGH"]


def test_back_and_forth_counts_all_the_way() -> None:
    recent = (sent(120, 1500), sent(30, 1700), sent(20, 1500))
    ctx = context(1500, recent=recent)
    assert codes(request(params={"rpm": 1600}), ctx) == []  # 200 + 200 + 100
    assert codes(request(params={"rpm": 1601}), ctx) == ["RATE_TOO_HIGH"]


def test_the_hour_slides() -> None:
    recent = (sent(120, 1500), sent(60, 1700), sent(30, 1900))
    ctx = context(1900, recent=recent)
    # The command of exactly an hour ago left the window: it is where the hour started.
    assert codes(request(params={"rpm": 2100}), ctx) == []  # 200 + 200 + ... = 400
    inside = (sent(120, 1500), sent(60 - 1e-6, 1700), sent(30, 1900))
    ctx = context(1900, recent=inside)
    assert codes(request(params={"rpm": 2100}), ctx) == ["RATE_TOO_HIGH"]  # 200 + 200 + 200


def test_commands_that_cannot_have_moved_the_device_do_not_count() -> None:
    base = sent(120, 1500)
    for status in ("cancelled", "failed"):
        ctx = context(1500, recent=(base, sent(30, 1700, status), sent(20, 1500, status)))
        assert codes(request(params={"rpm": 1700}), ctx) == []
    for status in ("expired", "succeeded", "delivered"):
        ctx = context(1500, recent=(base, sent(30, 1700, status), sent(20, 1500, status)))
        assert codes(request(params={"rpm": 1700}), ctx) == ["RATE_TOO_HIGH"]


def test_commands_of_other_methods_on_the_same_key_count() -> None:
    recent = (sent(120, 1500), sent(30, 1300, method="reduce_speed"), sent(20, 1500))
    assert codes(request(params={"rpm": 1700}), context(1500, recent=recent)) == ["RATE_TOO_HIGH"]


def test_an_hour_with_commands_but_no_start_is_refused() -> None:
    verdict = check(request(params={"rpm": 1600}), context(1500, recent=(sent(30, 1500),)))
    assert verdict.codes == ["RATE_BASELINE_UNKNOWN"]


def test_with_no_command_in_the_hour_the_current_value_starts_it() -> None:
    # A limit of 150 per hour: 1500 -> 1650 passes, one more fails.
    hourly = {
        "methods": {
            "set_speed": {
                "params": {
                    "rpm": {"type": "number", "key": "spindle_speed", "max_change_per_hour": 150}
                }
            }
        }
    }
    ctx = context(1500, recent=(sent(90, 900),))
    assert codes(request(params={"rpm": 1650}), ctx, hourly) == []
    assert codes(request(params={"rpm": 1651}), ctx, hourly) == ["RATE_TOO_HIGH"]


def test_naive_times_are_taken_as_utc() -> None:
    naive = PastCommand(
        at=(NOW - timedelta(minutes=30)).replace(tzinfo=None),
        method="set_speed",
        params={"rpm": 1700},
        status="succeeded",
    )
    ctx = context(1850, recent=(sent(120, 1500), naive, sent(20, 1850)))
    assert codes(request(params={"rpm": 2000}), ctx) == []  # 200 + 150 + 150
    assert codes(request(params={"rpm": 2001}), ctx) == ["RATE_TOO_HIGH"]


def test_malformed_past_commands_are_ignored_not_fatal() -> None:
    junk = (
        PastCommand(at=NOW, method="set_speed", params={"rpm": "fast"}, status="succeeded"),
        PastCommand(at=NOW, method="nope", params={"rpm": 5}, status="succeeded"),
        PastCommand(at="yesterday", method="set_speed", params={}, status="x"),  # type: ignore[arg-type]
        "not a command",
    )
    ctx = SafetyContext(now=NOW, values={"spindle_speed": 1500}, recent=junk)  # type: ignore[arg-type]
    assert codes(request(), ctx) == []


# --- interlocks -------------------------------------------------------------------------------


CRITICAL = ActiveAlert(severity="critical", rule="Spindle overload", key="current")
MAJOR = ActiveAlert(severity="major", rule="Spindle overload", key="current")
OVERHEAT = ActiveAlert(severity="minor", rule="Overheat", key="temperature")


def test_no_speed_increase_while_a_critical_alert_is_open() -> None:
    verdict = check(request(params={"rpm": 1600}), context(alerts=(CRITICAL,)))
    assert verdict.codes == ["INTERLOCK_ACTIVE"]
    assert verdict.reasons[0].details["interlock"] == "no speed-up on a critical alert"
    assert verdict.reasons[0].details["alerts"][0]["rule"] == "Spindle overload"
    assert codes(request(params={"rpm": 1600}), context()) == []


def test_a_less_severe_alert_does_not_lock() -> None:
    assert codes(request(params={"rpm": 1600}), context(alerts=(MAJOR, OVERHEAT))) == []


def test_a_decrease_or_no_change_is_not_an_increase() -> None:
    assert codes(request(params={"rpm": 1400}), context(alerts=(CRITICAL,))) == []
    assert codes(request(params={"rpm": 1500}), context(alerts=(CRITICAL,))) == []
    assert codes(request(params={"rpm": 1500.0000001}), context(alerts=(CRITICAL,))) == [
        "INTERLOCK_ACTIVE"
    ]


def test_an_unknown_severity_counts_as_the_most_severe() -> None:
    odd = ActiveAlert(severity="catastrophic", rule="X")
    assert codes(request(params={"rpm": 1600}), context(alerts=(odd,))) == ["INTERLOCK_ACTIVE"]


def test_a_direction_that_cannot_be_judged_locks() -> None:
    locked = {
        "methods": {"set": {"params": {"x": {"type": "number"}}}},
        "interlocks": [{"name": "up", "param": "x", "direction": "increase"}],
    }
    alert = ActiveAlert(severity="info", rule="any")
    unknown = SafetyContext(now=NOW, alerts=(alert,))
    assert codes(request("set", {"x": 1}), unknown, locked) == ["INTERLOCK_ACTIVE"]
    known = SafetyContext(now=NOW, values={"x": 2}, alerts=(alert,))
    assert codes(request("set", {"x": 1}), known, locked) == []


def test_no_start_while_a_rule_is_active() -> None:
    assert codes(request("start", {}), context(alerts=(OVERHEAT,))) == ["INTERLOCK_ACTIVE"]
    assert codes(request("start", {}), context(alerts=(CRITICAL,))) == []
    assert codes(request("start", {}), context()) == []


def test_an_interlock_on_a_key_covers_every_method() -> None:
    shaking = ActiveAlert(severity="major", rule="Vibration", key="vibration")
    mild = ActiveAlert(severity="minor", rule="Vibration", key="vibration")
    for method, params in (("start", {}), ("inspect", {}), ("set_mode", {"mode": "auto"})):
        assert codes(request(method, params), context(alerts=(shaking,))) == ["INTERLOCK_ACTIVE"]
        assert codes(request(method, params), context(alerts=(mild,))) == []


# --- approvals ---------------------------------------------------------------------------------


CAROL = Approval(by="carol", role="admin")


def test_every_method_needs_an_approval() -> None:
    verdict = check(request(approvals=()))
    assert verdict.codes == ["APPROVALS_MISSING"]
    assert verdict.awaiting_approval


def test_a_requester_may_approve_a_non_critical_method() -> None:
    assert codes(request(by="alice", approvals=(ALICE,))) == []


def test_a_viewer_or_unknown_role_cannot_approve() -> None:
    for role in ("viewer", "driver", "root", "Operator"):
        verdict = check(request(approvals=(Approval(by="dan", role=role),)))
        assert verdict.codes == ["APPROVAL_ROLE_TOO_LOW", "APPROVALS_MISSING"]
        assert not verdict.awaiting_approval


def test_two_distinct_approvals_pass_a_critical_method() -> None:
    assert codes(request("stop", {}, by="analytics", approvals=(ALICE, BOB))) == []
    assert codes(request("stop", {}, by="carol", approvals=(ALICE, BOB))) == []


def test_one_approval_of_a_critical_method_awaits_a_second() -> None:
    verdict = check(request("stop", {}, approvals=(ALICE,)))
    assert verdict.codes == ["APPROVALS_MISSING"]
    assert verdict.reasons[0].details == {
        "method": "stop",
        "needed": 2,
        "valid": 1,
        "critical": True,
    }
    assert verdict.awaiting_approval


def test_the_same_person_twice_is_one_approval() -> None:
    twice = (ALICE, Approval(by="alice", role="admin"))
    verdict = check(request("stop", {}, approvals=twice))
    assert verdict.codes == ["APPROVAL_DUPLICATE", "APPROVALS_MISSING"]
    assert not verdict.awaiting_approval
    # On a non-critical method too: a second approval by the same person is an error.
    assert codes(request(approvals=twice)) == ["APPROVAL_DUPLICATE"]


def test_a_requester_cannot_approve_their_own_critical_request() -> None:
    verdict = check(request("stop", {}, by="alice", approvals=(ALICE, BOB)))
    assert verdict.codes == ["APPROVAL_BY_REQUESTER", "APPROVALS_MISSING"]
    verdict = check(request("stop", {}, by="alice", approvals=(ALICE, BOB, CAROL)))
    assert verdict.codes == ["APPROVAL_BY_REQUESTER"]


def test_a_low_role_does_not_count_toward_two() -> None:
    viewer = Approval(by="vic", role="viewer")
    assert codes(request("stop", {}, approvals=(ALICE, viewer))) == [
        "APPROVAL_ROLE_TOO_LOW",
        "APPROVALS_MISSING",
    ]


def test_interlocks_and_approvals_are_all_reported() -> None:
    verdict = check(request(params={"rpm": 1800}, approvals=()), context(alerts=(CRITICAL,)))
    assert verdict.codes == ["STEP_TOO_LARGE", "INTERLOCK_ACTIVE", "APPROVALS_MISSING"]
    assert [r.as_dict()["code"] for r in verdict.reasons] == verdict.codes
    assert not verdict.awaiting_approval


# --- contracts with the rest of Fleetcore ------------------------------------------------------


def test_names_match_the_platforms() -> None:
    from fleetcore.alerts.models import Severity
    from fleetcore.auth.principal import Role
    from fleetcore.commands.models import CommandStatus

    assert tuple(Severity) == SEVERITIES
    assert {role: Role(role).rank for role in ROLE_RANK} == ROLE_RANK
    assert {role for role in Role if role.rank >= 0} == set(ROLE_RANK)
    assert EFFECTIVE_STATUSES | {"cancelled", "failed"} == set(CommandStatus)
    assert OPEN_STATUSES <= EFFECTIVE_STATUSES


def test_the_package_imports_nothing_of_the_application() -> None:
    code = (
        "import sys, fleetcore.safety.validator;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'fastapi')"
        " or m.startswith(('fleetcore.commands', 'fleetcore.analytics', 'fleetcore.db',"
        " 'fleetcore.auth', 'fleetcore.alerts'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_same_input_gives_the_same_verdict() -> None:
    recent = (sent(120, 1500), sent(30, 1700, "queued"))
    ctx = context(1500, recent=recent, alerts=(CRITICAL, OVERHEAT))
    req = request(params={"rpm": 1900, "x": 1}, approvals=(ALICE, ALICE))
    assert check(req, ctx) == check(req, ctx)
    assert (
        check(req, ctx).codes
        == check(req, context(1500, recent=recent[::-1], alerts=(CRITICAL, OVERHEAT))).codes
    )


# --- properties -------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["set_speed", "set_mode", "stop", "start", "inspect", "x"]) | JSON,
    params=st.dictionaries(st.sampled_from(["rpm", "mode", "passes", "note", "z"]), JSON) | JSON,
    by=JSON,
    speed=JSON,
)
def test_arbitrary_input_never_raises(method: Any, params: Any, by: Any, speed: Any) -> None:
    verdict = validate(POLICY, request(method, params, by=by), context(speed))
    assert verdict.passed == (verdict.codes == [])
    assert all(isinstance(reason.code, Code) for reason in verdict.reasons)


def _d(value: float) -> Decimal:
    return Decimal(repr(value))


def _expected_ok(
    limits: dict[str, float | None],
    rpm: float,
    current: float,
    history: list[tuple[float, float, str]],
    critical_alert: bool,
) -> bool:
    """An independent, deliberately plain statement of the rules for one setpoint."""
    with localcontext() as exact:
        exact.prec = 1000
        new, cur = _d(rpm), _d(current)
        if limits["min"] is not None and new < _d(limits["min"]):
            return False
        if limits["max"] is not None and new > _d(limits["max"]):
            return False
        counting = ("queued", "sent", "delivered", "succeeded", "expired")
        pending = [t for _, t, s in history if s in ("queued", "sent", "delivered")]
        starts = [cur] + ([_d(pending[-1])] if pending else [])
        for start in starts:
            if limits["step"] is not None and abs(new - start) > _d(limits["step"]):
                return False
            if limits["rel"] is not None and abs(new - start) > _d(limits["rel"]) * abs(start):
                return False
        if limits["hour"] is not None:
            inside = [_d(t) for age, t, s in history if s in counting and age < 60]
            before = [_d(t) for age, t, s in history if s in counting and age >= 60]
            if not inside:
                path = [cur, new]
            elif before:
                path = [before[-1], *inside, new]
            else:
                return False
            travel = sum(abs(path[i] - path[i - 1]) for i in range(1, len(path)))
            if travel > _d(limits["hour"]):
                return False
        return not (critical_alert and new > cur)


NUMBER = st.floats(min_value=-2000, max_value=2000, allow_nan=False) | st.integers(-2000, 2000)
LIMIT = st.none() | st.floats(min_value=0, max_value=1000) | st.integers(0, 1000)


@settings(max_examples=500, deadline=None)
@given(
    limits=st.fixed_dictionaries(
        {
            "min": st.none() | st.integers(-2000, 0),
            "max": st.none() | st.integers(0, 2000),
            "step": LIMIT,
            "rel": st.none() | st.floats(min_value=0, max_value=2) | st.just(0.25),
            "hour": LIMIT,
        }
    ),
    rpm=NUMBER,
    current=NUMBER,
    history=st.lists(
        st.tuples(
            st.integers(0, 150),  # minutes ago
            NUMBER,
            st.sampled_from(["succeeded", "failed", "cancelled", "queued", "expired"]),
        ),
        max_size=6,
    ),
    critical_alert=st.booleans(),
    near=st.booleans(),
)
def test_passing_means_every_rule_holds(
    limits: dict[str, float | None],
    rpm: float,
    current: float,
    history: list[tuple[float, float, str]],
    critical_alert: bool,
    near: bool,
) -> None:
    if near:  # most random values fail: also try some close to the current one
        rpm = current + rpm / 100
    history.sort(key=lambda item: -item[0])  # oldest first, as the validator orders them
    rule = {
        k: v
        for k, v in (
            ("min", limits["min"]),
            ("max", limits["max"]),
            ("max_step", limits["step"]),
            ("max_step_relative", limits["rel"]),
            ("max_change_per_hour", limits["hour"]),
        )
        if v is not None
    }
    policy = SafetyPolicy(
        methods={"set": MethodPolicy(params={"rpm": ParamRule(type="number", **rule)})},
        interlocks=[
            Interlock(
                name="up",
                param="rpm",
                direction="increase",
                when=AlertCondition(severity_at_least="critical"),
            )
        ],
    )
    recent = tuple(
        PastCommand(at=NOW - timedelta(minutes=age), method="set", params={"rpm": t}, status=s)
        for age, t, s in history
    )
    alerts = (CRITICAL,) if critical_alert else (MAJOR,)
    ctx = SafetyContext(now=NOW, values={"rpm": current}, recent=recent, alerts=alerts)
    verdict = validate(policy, request("set", {"rpm": rpm}), ctx)
    assert verdict.passed == _expected_ok(limits, rpm, current, history, critical_alert), (
        verdict.codes
    )


def test_the_documented_example_is_a_valid_policy() -> None:
    text = (Path(__file__).parents[1] / "docs" / "safety.md").read_text()
    example = text.split("```json", 1)[1].split("```", 1)[0]
    pump = SafetyPolicy.model_validate_json(example)
    assert pump.methods["stop"].critical
    ctx = SafetyContext(now=NOW, values={"pump_speed": 1500})
    assert validate(pump, request(params={"rpm": 1650}), ctx).passed
    assert validate(pump, request(params={"rpm": 1651}), ctx).codes == [
        "STEP_TOO_LARGE",
        "STEP_TOO_LARGE_RELATIVE",
    ]
    assert validate(pump, request("stop", {}), ctx).awaiting_approval


def test_a_context_without_a_time_denies() -> None:
    broken = SafetyContext(now="now")  # type: ignore[arg-type]
    assert validate(POLICY, request(), broken).codes == ["CONTEXT_INVALID"]
