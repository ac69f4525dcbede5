"""Who approved: every method needs an approval by an operator or above; a critical method
needs two, by two different people, neither of them the requester (the two-person rule).

An approval that does not count (the same person again, a role below operator, the requester
approving their own critical request) is itself a reason to refuse, so the caller learns it
must not record that approval; fewer approvals than needed is APPROVALS_MISSING, which alone
means "sound so far, waiting for people" (Verdict.awaiting_approval).
"""

from __future__ import annotations

from collections.abc import Sequence

from fleetcore.safety.inputs import APPROVER_MIN_ROLE, ROLE_RANK, Approval
from fleetcore.safety.verdict import Code, Reason


def needed(critical: bool) -> int:
    """How many approvals a method needs."""
    return 2 if critical else 1


def check_approvals(
    method: str, critical: bool, requested_by: str, approvals: Sequence[Approval]
) -> list[Reason]:
    """The reasons the approvals so far do not (yet) allow the request."""
    reasons: list[Reason] = []
    seen: set[str] = set()
    valid = 0
    for index, approval in enumerate(approvals):
        by, role = str(approval.by), str(approval.role)
        details = {"method": method, "approval": index, "by": by, "role": role}
        if by in seen:
            reasons.append(
                Reason(Code.APPROVAL_DUPLICATE, f"{by} already approved this request", details)
            )
            continue
        seen.add(by)
        if ROLE_RANK.get(role, -1) < ROLE_RANK[APPROVER_MIN_ROLE]:
            reasons.append(
                Reason(
                    Code.APPROVAL_ROLE_TOO_LOW,
                    f"{by} ({role}) may not approve: {APPROVER_MIN_ROLE} or above is needed",
                    details,
                )
            )
            continue
        if critical and by == requested_by:
            reasons.append(
                Reason(
                    Code.APPROVAL_BY_REQUESTER,
                    f"{method} is critical: {by} requested it and may not approve it",
                    details,
                )
            )
            continue
        valid += 1
    if valid < needed(critical):
        rule = " by two different people other than the requester" if critical else ""
        reasons.append(
            Reason(
                Code.APPROVALS_MISSING,
                f"{method} needs {needed(critical)} approval(s){rule}; {valid} so far",
                {
                    "method": method,
                    "needed": needed(critical),
                    "valid": valid,
                    "critical": critical,
                },
            )
        )
    return reasons
