"""Rule conditions: the JSON grammar (validated with Pydantic) and its compiled form.

A condition is a tree: leaves test one telemetry key (threshold, outside a range, rate of
change over a window) or the absence of data; "all"/"any" combine them. Compiled, a tree
is a plain function of a device's view and the evaluation time, so the live engine and
the dry run evaluate the very same code.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Op = Literal[">", ">=", "<", "<=", "==", "!="]
OrderOp = Literal[">", ">=", "<", "<="]
KeyName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\s]+$")]
MAX_LEAVES = 20
MAX_DEPTH = 4
MAX_WINDOW_S = 86_400
_SAMPLE_TS = operator.itemgetter(0)
_PER_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000}
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class _Leaf(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(_Leaf):
    """The key's latest value compared with a constant."""

    type: Literal["threshold"] = "threshold"
    key: KeyName
    op: Op
    value: float | bool | str

    @model_validator(mode="after")
    def _ordering_needs_a_number(self) -> Threshold:
        if self.op in (">", ">=", "<", "<=") and not _is_number(self.value):
            raise ValueError(f"'{self.op}' compares numbers; value must be a number")
        return self


class OutsideRange(_Leaf):
    """The key's latest value below `min` or above `max`."""

    type: Literal["outside_range"]
    key: KeyName
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> OutsideRange:
        if self.min >= self.max:
            raise ValueError("min must be below max")
        return self


class RateOfChange(_Leaf):
    """How fast the key changed over the last `window_s` (per second, minute or hour)."""

    type: Literal["rate_of_change"]
    key: KeyName
    window_s: int = Field(ge=1, le=MAX_WINDOW_S)
    op: OrderOp
    value: float
    per: Literal["second", "minute", "hour"] = "minute"


class NoData(_Leaf):
    """Nothing from the device (or of one key) for `minutes`."""

    type: Literal["no_data"]
    minutes: float = Field(gt=0, le=43_200)
    key: KeyName | None = None


def _default_threshold(value: Any) -> Any:
    """{"key","op","value"} without a type is a threshold, as written in the docs."""
    if isinstance(value, dict) and "type" not in value and {"key", "op"} <= value.keys():
        return {"type": "threshold", **value}
    return value


class All(BaseModel):
    """Every condition holds."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1, max_length=MAX_LEAVES)


class AnyOf(BaseModel):
    """At least one condition holds."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1, max_length=MAX_LEAVES)


_Tagged = Annotated[
    Threshold | OutsideRange | RateOfChange | NoData | All | AnyOf, Field(discriminator="type")
]
Condition = Annotated[_Tagged, BeforeValidator(_default_threshold)]
All.model_rebuild()
AnyOf.model_rebuild()


_NUMBERS = frozenset((int, float))  # exact types: a bool is an int, not a number here


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBERS  # values are parsed JSON: no other int or float types


def check_shape(condition: BaseModel, depth: int = 1) -> int:
    """The number of leaves; ValueError past MAX_DEPTH levels or MAX_LEAVES leaves."""
    if depth > MAX_DEPTH:
        raise ValueError(f"conditions nest at most {MAX_DEPTH} levels deep")
    if isinstance(condition, All | AnyOf):
        leaves = sum(check_shape(c, depth + 1) for c in condition.conditions)
        if leaves > MAX_LEAVES:
            raise ValueError(f"a rule has at most {MAX_LEAVES} conditions")
        return leaves
    return 1


# -- the compiled form -----------------------------------------------------------------


@dataclass(slots=True)
class DeviceView:
    """What the engine knows of one device: latest value per key, recent samples of the
    keys that rate rules watch, and when anything last arrived (epoch ms)."""

    values: dict[str, tuple[int, Any]] = field(default_factory=dict)
    windows: dict[str, deque[tuple[int, float]]] = field(default_factory=dict)
    last_ts: int | None = None
    since: int = 0  # when "no data" starts counting for a device that never sent any

    def update(self, key: str, ts: int, value: Any, window_ms: int | None) -> None:
        """Record a reading (in timestamp order); keep `window_ms` of samples for rates."""
        self.values[key] = (ts, value)
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        if window_ms is not None and _is_number(value):
            samples = self.windows.setdefault(key, deque())
            samples.append((ts, float(value)))
            while samples and samples[0][0] < ts - window_ms:
                samples.popleft()


Check = Callable[[DeviceView, int], bool]


def compile_condition(condition: BaseModel) -> Check:
    """A function (view, now_ms) -> bool for a validated condition."""
    if isinstance(condition, Threshold):
        key, compare, target = condition.key, _OPS[condition.op], condition.value
        if _is_number(target):

            def threshold(view: DeviceView, now: int) -> bool:
                # Evaluated once per rule per reading: inlined, no helper calls.
                found = view.values.get(key)
                return (
                    found is not None
                    and type(found[1]) in _NUMBERS
                    and bool(compare(found[1], target))
                )

            return threshold

        def equals(view: DeviceView, now: int) -> bool:
            found = view.values.get(key)
            return found is not None and compare(found[1], target)

        return equals
    if isinstance(condition, OutsideRange):
        key, low, high = condition.key, condition.min, condition.max

        def outside(view: DeviceView, now: int) -> bool:
            found = view.values.get(key)
            if found is None or type(found[1]) not in _NUMBERS:
                return False
            value = found[1]
            return bool(value < low or value > high)

        return outside
    if isinstance(condition, RateOfChange):
        return _rate(condition)
    if isinstance(condition, NoData):
        key_or_none, quiet_ms = condition.key, condition.minutes * 60_000

        def no_data(view: DeviceView, now: int) -> bool:
            if key_or_none is None:
                last = view.last_ts
            else:
                found = view.values.get(key_or_none)
                last = None if found is None else found[0]
            return now - (view.since if last is None else last) >= quiet_ms

        return no_data
    if isinstance(condition, All):
        parts = tuple(compile_condition(c) for c in condition.conditions)

        def every(view: DeviceView, now: int) -> bool:
            for part in parts:  # noqa: SIM110 (a loop is cheaper than a generator)
                if not part(view, now):
                    return False
            return True

        return every
    if isinstance(condition, AnyOf):
        parts = tuple(compile_condition(c) for c in condition.conditions)

        def some(view: DeviceView, now: int) -> bool:
            for part in parts:  # noqa: SIM110 (a loop is cheaper than a generator)
                if part(view, now):
                    return True
            return False

        return some
    raise TypeError(f"not a condition: {condition!r}")


def _rate(condition: RateOfChange) -> Check:
    key, compare, target = condition.key, _OPS[condition.op], condition.value
    window_ms, per_ms = condition.window_s * 1_000, _PER_MS[condition.per]

    def rate(view: DeviceView, now: int) -> bool:
        samples = view.windows.get(key)
        if not samples:
            return False
        newest_ts, newest = samples[-1]
        since = newest_ts - window_ms
        first = samples[0]
        if first[0] < since:
            # The view keeps the longest window of the key; this rule's is shorter. (When it
            # is the longest, the oldest sample is the first: no search, the common case.)
            first = samples[bisect_left(samples, since, key=_SAMPLE_TS)]
        if first[0] == newest_ts:
            return False
        return bool(compare((newest - first[1]) * per_ms / (newest_ts - first[0]), target))

    return rate


@dataclass(frozen=True, slots=True)
class Needs:
    """What a condition reads: keys, rate windows per key, and whether it is about silence."""

    keys: frozenset[str]
    windows: dict[str, int]  # key -> longest rate window, ms
    no_data: bool  # contains a "no data" leaf (the timer evaluates it)
    any_key: bool  # a "no data" leaf without a key: every reading of the device matters
    quiet_ms: tuple[int, ...] = ()  # the "no data" spans, ms


def needs_of(*conditions: BaseModel | None) -> Needs:
    """The union of what these conditions read."""
    keys: set[str] = set()
    windows: dict[str, int] = {}
    flags = {"no_data": False, "any_key": False}
    quiet: set[int] = set()

    def walk(node: BaseModel) -> None:
        if isinstance(node, All | AnyOf):
            for child in node.conditions:
                walk(child)
            return
        if isinstance(node, NoData):
            flags["no_data"] = True
            quiet.add(int(node.minutes * 60_000))
            if node.key is None:
                flags["any_key"] = True
                return
        key: str = node.key  # type: ignore[attr-defined]
        keys.add(key)
        if isinstance(node, RateOfChange):
            windows[key] = max(windows.get(key, 0), node.window_s * 1_000)

    for condition in conditions:
        if condition is not None:
            walk(condition)
    return Needs(frozenset(keys), windows, flags["no_data"], flags["any_key"], tuple(sorted(quiet)))
