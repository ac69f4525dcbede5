"""Advisory pages: /analytics (fleet health ranking, findings arriving live), one finding,
/recommendations (approve, reject, mark done through the recommendations API; the page
only shows what the API decides)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from fleetcore.advisory import review, wording
from fleetcore.analytics import queries
from fleetcore.auth.principal import Role
from fleetcore.dashboard.web import Context, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.errors import Invalid

router = APIRouter(include_in_schema=False)
RANKING_SIZE = 50
FINDINGS_SIZE = 50
WORDS = wording.FOR_TEMPLATES


def _device_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        raise Invalid(
            "device is not an id", code="INVALID_ID", details={"field": "device"}
        ) from None


@router.get("/analytics")
async def analytics_page(
    request: Request,
    session: SessionDep,
    context: Context,
    device: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    part: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    """The fleet's health, worst first, and the newest findings (filter by device); new
    findings arrive live. `part` = ranking | findings for the fragments the page refreshes."""
    principal = principal_of(context)
    device_id = _device_id(device)
    values: dict[str, Any] = {"device_filter": device or "", **WORDS}
    if part != "findings":
        ranking, _ = await queries.fleet_health(session, principal, cursor=None, limit=RANKING_SIZE)
        values["ranking"] = ranking
        if part == "ranking":
            return render(context, "advisory/_ranking.html", **values)
    findings, next_cursor = await queries.list_findings(
        session,
        principal,
        filters=queries.FindingFilter(device_id=device_id),
        cursor=cursor or None,
        limit=FINDINGS_SIZE,
    )
    values.update(findings=findings, next_cursor=next_cursor)
    if part == "findings" or (is_fragment(request) and cursor):
        return render(context, "advisory/_findings.html", **values)
    return render(context, "advisory/analytics.html", **values)


@router.get("/analytics/findings/{finding_id}")
async def finding_page(
    finding_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    session: SessionDep,
    context: Context,
    part: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    """One finding with its evidence; `part=row` is its row of the findings table."""
    view = await queries.get_finding(session, principal_of(context), finding_id)
    template = "advisory/_finding_row.html" if part == "row" else "advisory/finding.html"
    return render(context, template, f=view.finding, device_name=view.device_name, **WORDS)


@router.get("/recommendations")
async def recommendations_page(session: SessionDep, context: Context) -> HTMLResponse:
    """Proposed recommendations first, then the latest decided."""
    principal = principal_of(context)
    proposed, history = await review.for_review(session, principal)
    return render(
        context,
        "advisory/recommendations.html",
        proposed=proposed,
        history=history,
        can_write=principal.has(Role.OPERATOR),
        **WORDS,
    )


@router.get("/recommendations/{recommendation_id}")
async def recommendation_page(
    recommendation_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    part: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    """One recommendation; `part=card` is its card, swapped in after a decision."""
    principal = principal_of(context)
    view = await review.one(session, principal, recommendation_id)
    template = "advisory/_recommendation.html" if part == "card" else "advisory/recommendation.html"
    return render(context, template, r=view, can_write=principal.has(Role.OPERATOR), **WORDS)
