"""The validator's answer: passed, or the reasons it did not, each with a stable code.

Codes are part of the contract (the API and the recommendation history show them): add new
ones, never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Code(StrEnum):
    """Why a request was refused."""

    POLICY_INVALID = "POLICY_INVALID"  # the policy itself does not validate: deny
    REQUEST_MALFORMED = "REQUEST_MALFORMED"  # method/params/requester/approvals of a wrong shape
    CONTEXT_INVALID = "CONTEXT_INVALID"  # the caller's context has no usable time: deny
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # not in the policy (the empty policy: any)
    PARAM_UNKNOWN = "PARAM_UNKNOWN"  # a param the method's policy does not list
    PARAM_MISSING = "PARAM_MISSING"  # a required param is absent
    PARAM_WRONG_TYPE = "PARAM_WRONG_TYPE"
    PARAM_NOT_FINITE = "PARAM_NOT_FINITE"  # NaN or infinity
    PARAM_TOO_LARGE = "PARAM_TOO_LARGE"  # beyond policy.MAX_MAGNITUDE
    PARAM_BELOW_MIN = "PARAM_BELOW_MIN"
    PARAM_ABOVE_MAX = "PARAM_ABOVE_MAX"
    PARAM_VALUE_NOT_ALLOWED = "PARAM_VALUE_NOT_ALLOWED"  # not among `allowed`
    PARAM_TOO_LONG = "PARAM_TOO_LONG"  # a string longer than max_length
    CURRENT_VALUE_UNKNOWN = "CURRENT_VALUE_UNKNOWN"  # a motion limit with no current value
    STEP_TOO_LARGE = "STEP_TOO_LARGE"  # |change| above max_step
    STEP_TOO_LARGE_RELATIVE = "STEP_TOO_LARGE_RELATIVE"  # above max_step_relative * |current|
    RATE_TOO_HIGH = "RATE_TOO_HIGH"  # movement within the sliding hour above the limit
    RATE_BASELINE_UNKNOWN = "RATE_BASELINE_UNKNOWN"  # where the hour started is not known
    INTERLOCK_ACTIVE = "INTERLOCK_ACTIVE"
    APPROVALS_MISSING = "APPROVALS_MISSING"  # fewer valid approvals than the method needs
    APPROVAL_BY_REQUESTER = "APPROVAL_BY_REQUESTER"  # a critical method approved by its requester
    APPROVAL_DUPLICATE = "APPROVAL_DUPLICATE"  # the same person approved twice
    APPROVAL_ROLE_TOO_LOW = "APPROVAL_ROLE_TOO_LOW"  # below operator, or an unknown role


@dataclass(frozen=True, slots=True)
class Reason:
    """One rule a request broke: its code, a message for people, and the numbers behind it."""

    code: Code
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for storing with the recommendation or answering the API."""
        return {"code": str(self.code), "message": self.message, "details": self.details}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Passed when there is no reason; otherwise every reason found (in a stable order)."""

    reasons: tuple[Reason, ...] = ()

    @property
    def passed(self) -> bool:
        """True if the request may become a command."""
        return not self.reasons

    @property
    def codes(self) -> list[str]:
        """The reasons' codes, in order."""
        return [str(reason.code) for reason in self.reasons]

    @property
    def awaiting_approval(self) -> bool:
        """True if only more approvals are missing: the request is sound so far."""
        return bool(self.reasons) and all(
            reason.code is Code.APPROVALS_MISSING for reason in self.reasons
        )
