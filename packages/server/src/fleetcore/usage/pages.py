"""The /usage page: an organization's metered usage per day or month, a chart per kind,
and the CSV export; admins."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from fleetcore.dashboard.web import Context, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.usage import service
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.schemas import Granularity

router = APIRouter(include_in_schema=False)


@router.get("/usage")
async def usage_page(
    session: SessionDep,
    context: Context,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    granularity: Granularity = "day",
) -> HTMLResponse:
    """A chart per kind over the period (every transport summed) and a table of totals."""
    usage = await service.usage(
        session,
        principal_of(context),
        start=start,
        end=end,
        granularity=granularity,
        today=datetime.now(UTC).date(),
    )
    periods = sorted({row.period for row in usage.rows})
    series: dict[str, dict[str, int]] = {str(kind): {} for kind in UsageKind}
    for row in usage.rows:
        per_period = series.setdefault(row.kind, {})
        key = row.period.isoformat()
        per_period[key] = per_period.get(key, 0) + row.n
    charts = [
        {
            "kind": kind,
            "periods": [p.isoformat() for p in periods],
            "values": [values.get(p.isoformat(), 0) for p in periods],
            "total": sum(values.values()),
        }
        for kind, values in series.items()
    ]
    query = f"from={usage.start.isoformat()}&to={usage.end.isoformat()}&granularity={granularity}"
    return render(
        context,
        "usage/index.html",
        usage=usage,
        charts=charts,
        granularity=granularity,
        csv_url=f"/api/v1/usage.csv?{query}",
    )
