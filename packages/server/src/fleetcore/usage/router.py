"""GET /api/v1/usage (JSON or CSV) and /api/v1/usage.csv: an organization's metered usage;
admins (a superuser may name another organization)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.usage import service
from fleetcore.usage.export import usage_csv
from fleetcore.usage.schemas import Granularity, UsageOut

router = APIRouter(prefix="/api/v1", tags=["usage"])

From = Annotated[
    date | None,
    Query(alias="from", description="first UTC day (default: 30 days or 12 months back)"),
]
To = Annotated[
    date | None, Query(alias="to", description="last UTC day, inclusive (default: today)")
]
Org = Annotated[uuid.UUID | None, Query(description="superusers: another organization")]
CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


async def _usage(
    session: SessionDep,
    principal: PrincipalDep,
    start: date | None,
    end: date | None,
    granularity: Granularity,
    organization_id: uuid.UUID | None,
) -> service.Usage:
    return await service.usage(
        session,
        principal,
        start=start,
        end=end,
        granularity=granularity,
        organization_id=organization_id,
        today=datetime.now(UTC).date(),
    )


def _csv(usage: service.Usage) -> Response:
    name = f"usage-{usage.granularity}-{usage.start.isoformat()}-{usage.end.isoformat()}.csv"
    return Response(
        usage_csv(usage),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/usage", response_model=UsageOut, responses=CSV)
async def get_usage(
    session: SessionDep,
    principal: PrincipalDep,
    start: From = None,
    end: To = None,
    granularity: Granularity = "day",
    organization_id: Org = None,
    format: Literal["json", "csv"] = "json",
) -> UsageOut | Response:
    """Usage per UTC day or month: messages, readings, API requests, WebSocket minutes,
    notifications, commands, active devices, storage; `format=csv` for billing."""
    usage = await _usage(session, principal, start, end, granularity, organization_id)
    return _csv(usage) if format == "csv" else UsageOut.of(usage)


@router.get("/usage.csv", response_class=Response, responses=CSV)
async def get_usage_csv(
    session: SessionDep,
    principal: PrincipalDep,
    start: From = None,
    end: To = None,
    granularity: Granularity = "day",
    organization_id: Org = None,
) -> Response:
    """The same as CSV (one line per period, kind and transport)."""
    return _csv(await _usage(session, principal, start, end, granularity, organization_id))
