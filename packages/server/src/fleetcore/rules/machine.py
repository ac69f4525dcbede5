"""The alert state machine of one rule on one device: pure, shared by the engine and the
dry run.

A condition must hold for `duration` before the alert opens. While it is open, the
condition firing again (after it had stopped holding) is a repeat; the alert clears when
the clear condition holds, or, without one, as soon as the condition no longer holds. A
clear condition below the trigger (hysteresis) keeps a value dancing on the threshold from
opening and clearing alert after alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleetcore.rules.conditions import Check, DeviceView


class Step(StrEnum):
    """What an evaluation did to the alert."""

    OPENED = "opened"
    REPEATED = "repeated"
    CLEARED = "cleared"


@dataclass(slots=True)
class Track:
    """The evaluation state of one rule on one device (persisted in rule_states)."""

    pending_since: int | None = None  # ms at which the condition began to hold
    latched: bool = False  # this run of the condition already opened or repeated the alert
    open: bool = False  # an alert is active or acknowledged

    @property
    def idle(self) -> bool:
        """Nothing worth keeping: no pending duration, no open alert."""
        return self.pending_since is None and not self.latched and not self.open

    def key(self) -> tuple[int | None, bool, bool]:
        """The persisted fields, to tell whether a step changed them."""
        return self.pending_since, self.latched, self.open


@dataclass(frozen=True, slots=True)
class Compiled:
    """A rule ready to evaluate."""

    condition: Check
    clear: Check | None
    duration_ms: int


def step(rule: Compiled, track: Track, view: DeviceView, now: int) -> Step | None:
    """Evaluate at `now` (epoch ms); update `track` and say what happened to the alert."""
    raised = rule.condition(view, now)
    if raised:
        if track.pending_since is None:
            track.pending_since = now
        fired = now - track.pending_since >= rule.duration_ms
    else:
        track.pending_since = None
        fired = False
    if not track.open:
        if fired:
            track.open = track.latched = True
            return Step.OPENED
        if not raised:
            track.latched = False
        return None
    if fired:
        if track.latched:
            return None
        track.latched = True
        return Step.REPEATED
    cleared = rule.clear(view, now) if rule.clear is not None else not raised
    if not raised:
        track.latched = False
    if cleared and not raised:
        track.open = track.latched = False
        track.pending_since = None
        return Step.CLEARED
    return None
