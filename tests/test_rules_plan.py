"""A device's rules indexed by key (fleetcore.rules.plan), as pure code (no database)."""

from __future__ import annotations

import uuid
from typing import Any

from fleetcore.rules.index import LiveRule
from fleetcore.rules.models import Rule
from fleetcore.rules.plan import MAX_CACHED_MASKS, DevicePlan

ORG, DEVICE = uuid.uuid4(), uuid.uuid4()


def live(name: str, condition: dict[str, Any]) -> LiveRule:
    rule = Rule(
        id=uuid.uuid4(),
        organization_id=ORG,
        name=name,
        device_id=DEVICE,
        condition=condition,
        duration_s=0,
        severity="minor",
    )
    return LiveRule.of(rule)


def names(plan: DevicePlan, mask: int) -> list[str]:
    return [rule.name for rule, _, _ in plan.pick(mask)]


def test_a_timestamp_steps_the_rules_of_its_keys_in_the_plans_order() -> None:
    plan = DevicePlan.of(
        [
            live("hot", {"key": "t", "op": ">", "value": 30}),
            live("humid", {"key": "h", "op": ">", "value": 80}),
            live(
                "both",
                {
                    "type": "all",
                    "conditions": [
                        {"key": "t", "op": ">", "value": 7},
                        {"key": "h", "op": ">", "value": 8},
                    ],
                },
            ),
            live("silent", {"type": "no_data", "minutes": 5}),
            live("no door", {"type": "no_data", "minutes": 5, "key": "door"}),
            live(
                "rising",
                {"type": "rate_of_change", "key": "t", "window_s": 60, "op": ">", "value": 1},
            ),
            live(
                "rising slowly",
                {"type": "rate_of_change", "key": "t", "window_s": 600, "op": ">", "value": 0.1},
            ),
        ]
    )
    # a reading of t: the rules reading t, and the one every reading concerns
    assert names(plan, plan.always | plan.masks["t"]) == [
        "hot", "both", "silent", "rising", "rising slowly"
    ]  # fmt: skip
    assert names(plan, plan.always | plan.masks["h"]) == ["humid", "both", "silent"]
    assert names(plan, plan.always | plan.masks["door"]) == ["silent", "no door"]
    assert "other" not in plan.masks  # a key no rule reads steps only "silent"
    assert names(plan, plan.always) == ["silent"]
    assert names(plan, plan.every) == [r.name for r in plan.rules]
    assert plan.windows == {"t": 600_000}  # the longest rate window of the key


def test_the_cache_of_picks_is_bounded_and_picks_stay_right() -> None:
    rules = [live(f"r{i}", {"key": f"k{i}", "op": ">", "value": i}) for i in range(10)]
    plan = DevicePlan.of(rules)
    for mask in range(1, 2**10):
        picked = [rule.name for rule, _, _ in plan.pick(mask)]
        assert picked == [f"r{i}" for i in range(10) if mask >> i & 1]
    assert len(plan._picked) == MAX_CACHED_MASKS
    # each target carries the rule's state key and its compiled condition
    [(rule, key, condition)] = plan.pick(plan.masks["k3"])
    assert (rule.name, key, condition) == ("r3", rule.id.int, rule.compiled.condition)
