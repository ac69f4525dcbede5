"""One device's rules arranged for evaluation: which rules a reading of each key concerns.

At each timestamp of a batch the engine steps only the rules that read a key that
timestamp brought, or that every reading concerns (a "no data" of the whole device). The
rules of a key are a bitmask over the device's rules: the keys of one timestamp combine
with one `|` per reading, and the rules a mask picks come from a small cache (a device
sends the same set of keys message after message).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetcore.rules.conditions import Check

if TYPE_CHECKING:
    from fleetcore.rules.index import LiveRule

# Distinct key sets cached per device; beyond this a pick is computed each time (a device
# sending ever-new combinations of keys must not grow memory without bound).
MAX_CACHED_MASKS = 64

# What the engine steps for one rule: the rule, its state key (id.int) and its condition.
Target = tuple["LiveRule", int, Check]


@dataclass(slots=True)
class DevicePlan:
    """The rules of one device, indexed by the keys they read."""

    rules: tuple[LiveRule, ...]
    masks: dict[str, int]  # key -> the rules reading it, as bits over `rules`
    always: int  # the rules every reading of the device concerns
    every: int  # every rule's bit
    windows: dict[str, int]  # key -> the longest rate window over the rules, ms
    _picked: dict[int, tuple[Target, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, rules: Iterable[LiveRule]) -> DevicePlan:
        """The plan of these rules (in this order: outcomes follow it)."""
        ordered = tuple(rules)
        masks: dict[str, int] = {}
        always = 0
        windows: dict[str, int] = {}
        for i, rule in enumerate(ordered):
            bit = 1 << i
            if rule.needs.any_key:
                always |= bit
            for key in rule.needs.keys:
                masks[key] = masks.get(key, 0) | bit
            for key, ms in rule.needs.windows.items():
                windows[key] = max(windows.get(key, 0), ms)
        return cls(ordered, masks, always, (1 << len(ordered)) - 1, windows)

    def pick(self, mask: int) -> tuple[Target, ...]:
        """The rules of `mask`, in the plan's order."""
        found = self._picked.get(mask)
        if found is None:
            found = tuple(
                (rule, rule.key, rule.compiled.condition)
                for i, rule in enumerate(self.rules)
                if mask >> i & 1
            )
            if len(self._picked) < MAX_CACHED_MASKS:
                self._picked[mask] = found
        return found
