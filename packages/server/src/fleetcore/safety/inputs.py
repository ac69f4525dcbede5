"""What the validator is given: the request (what is asked, by whom, who approved) and the
device's context (its current values, recent commands, active alerts, and the time).

Frozen, slotted dataclasses filled by the caller. The request's fields are typed `object`
because they may come straight from JSON: the validator checks every one and turns a malformed
request into a reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Roles that may approve, with their ranks (as fleetcore.auth.principal.Role; a test keeps them
# equal). Kept here so this package imports nothing of the web application.
ROLE_RANK = {"viewer": 0, "operator": 1, "manager": 2, "admin": 3}
APPROVER_MIN_ROLE = "operator"

# Statuses of a past command that may have moved the device: all but those known not to have
# (cancelled before sending, or refused/failed). An expired command may have been applied.
EFFECTIVE_STATUSES = frozenset({"queued", "sent", "delivered", "succeeded", "expired"})
# Statuses of a command not finished yet: its target is where the device is heading.
OPEN_STATUSES = frozenset({"queued", "sent", "delivered"})


@dataclass(frozen=True, slots=True)
class Approval:
    """One person's approval: who (a stable id, e.g. the user id) and their role then."""

    by: object
    role: object


@dataclass(frozen=True, slots=True)
class SafetyRequest:
    """An action asked of a device: method and params, who asked, and the approvals so far."""

    method: object
    params: object
    requested_by: object
    approvals: Sequence[object] = ()


@dataclass(frozen=True, slots=True)
class PastCommand:
    """A command the device was sent: when it was created, what it asked, and its status."""

    at: datetime
    method: str
    params: Mapping[str, Any]
    status: str


@dataclass(frozen=True, slots=True)
class ActiveAlert:
    """An open (active or acknowledged) alert of the device."""

    severity: str
    rule: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class SafetyContext:
    """The device as the validator sees it.

    `values`: the current value of each key (latest telemetry or attribute). `recent`: the
    device's commands created in the last hour, plus the latest one before that hour which
    set each limited key (the hourly limit measures the first step in the hour from it);
    older ones are ignored. `alerts`: its open alerts. `now`: the time of the decision.
    `hour_start`: each hourly-limited key's value when the sliding hour began (the newest
    reading at or before now - 1 h), where known: the hour's starting point when no earlier
    command set the key.
    """

    now: datetime
    values: Mapping[str, Any] = field(default_factory=dict)
    recent: Sequence[PastCommand] = ()
    alerts: Sequence[ActiveAlert] = ()
    hour_start: Mapping[str, Any] = field(default_factory=dict)
