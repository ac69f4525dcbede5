"""validate(policy, request, context) -> Verdict: may this approved action reach the device?

Pure and deterministic: no I/O, no clock (the context brings `now`), no exception for bad
input (a malformed request or policy is a reason). Every rule is checked and every broken
one reported, in a fixed order: the policy, the request's shape, the method, its params,
the motion limits (motion.py), the interlocks (interlocks.py), the approvals (approvals.py).
A request that fails its shape or method is not checked further (there is nothing to check
it against). The safe default is refusal: no policy, an invalid policy, an unknown method.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from fleetcore.safety.approvals import check_approvals
from fleetcore.safety.inputs import Approval, SafetyContext, SafetyRequest
from fleetcore.safety.interlocks import check_interlocks
from fleetcore.safety.motion import check_motion
from fleetcore.safety.params import check_params
from fleetcore.safety.policy import MAX_PARAMS, SafetyPolicy
from fleetcore.safety.verdict import Code, Reason, Verdict

MAX_NAME = 256  # longest requester or approver id
MAX_APPROVALS = 10


def _policy(policy: SafetyPolicy | Mapping[str, Any] | None) -> SafetyPolicy | Reason:
    if policy is None:
        return SafetyPolicy()
    if isinstance(policy, SafetyPolicy):
        return policy
    try:
        return SafetyPolicy.model_validate(policy)
    except ValidationError as error:
        problems = [
            {"at": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()[:10]
        ]
        return Reason(Code.POLICY_INVALID, "the safety policy is not valid", {"errors": problems})


def _malformed(field: str, text: str) -> Reason:
    return Reason(Code.REQUEST_MALFORMED, f"{field} {text}", {"field": field})


def _person(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_NAME and value.strip() == value


def _shape(request: SafetyRequest) -> list[Reason]:
    reasons: list[Reason] = []
    method = request.method
    if not isinstance(method, str) or not 0 < len(method) <= 64 or not method.isprintable():
        reasons.append(_malformed("method", "must be a name of 1 to 64 printable characters"))
    params = request.params
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        reasons.append(_malformed("params", "must be a JSON object"))
    elif len(params) > MAX_PARAMS * 4:
        reasons.append(_malformed("params", f"has {len(params)} entries; far too many"))
    if not _person(request.requested_by):
        reasons.append(_malformed("requested_by", "must name who asked (1-256 characters)"))
    approvals = request.approvals
    if isinstance(approvals, str | bytes) or not isinstance(approvals, Sequence):
        reasons.append(_malformed("approvals", "must be a list of approvals"))
    elif len(approvals) > MAX_APPROVALS:
        reasons.append(_malformed("approvals", f"has more than {MAX_APPROVALS} entries"))
    elif not all(
        isinstance(a, Approval) and _person(a.by) and isinstance(a.role, str) for a in approvals
    ):
        reasons.append(_malformed("approvals", "must each name who approved and their role"))
    return reasons


def _context(context: SafetyContext) -> SafetyContext:
    """The context with its collections of the expected kinds (anything else is empty)."""
    values = context.values if isinstance(context.values, Mapping) else {}
    recent = context.recent if isinstance(context.recent, Sequence) else ()
    alerts = context.alerts if isinstance(context.alerts, Sequence) else ()
    began = context.hour_start if isinstance(context.hour_start, Mapping) else {}
    return SafetyContext(
        now=context.now, values=values, recent=recent, alerts=alerts, hour_start=began
    )


def validate(
    policy: SafetyPolicy | Mapping[str, Any] | None,
    request: SafetyRequest,
    context: SafetyContext,
) -> Verdict:
    """Passed, or every reason the request may not become a command."""
    parsed = _policy(policy)
    if isinstance(parsed, Reason):
        return Verdict((parsed,))
    if not isinstance(context, SafetyContext) or not isinstance(context.now, datetime):
        return Verdict((Reason(Code.CONTEXT_INVALID, "the context has no time of decision"),))
    shape = _shape(request)
    if shape:
        return Verdict(tuple(shape))
    method = request.method
    params = request.params
    assert isinstance(method, str)  # checked by _shape
    assert isinstance(params, Mapping)
    rules = parsed.methods.get(method)
    if rules is None:
        allowed = sorted(parsed.methods)
        return Verdict(
            (
                Reason(
                    Code.METHOD_NOT_ALLOWED,
                    f"method {method!r} is not allowed by the device profile's safety policy",
                    {"method": method, "allowed": allowed},
                ),
            )
        )
    context = _context(context)
    reasons, clean = check_params(method, rules, params)
    reasons += check_motion(parsed, method, clean, context)
    reasons += check_interlocks(parsed, method, clean, context.values, context.alerts)
    approvals = [a for a in request.approvals if isinstance(a, Approval)]
    reasons += check_approvals(method, rules.critical, str(request.requested_by), approvals)
    return Verdict(tuple(reasons))
