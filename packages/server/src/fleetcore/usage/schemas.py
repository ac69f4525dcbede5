"""Usage API answers."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

from fleetcore.usage.service import Usage

Granularity = Literal["day", "month"]


class UsageRowOut(BaseModel):
    """One kind's total over one period."""

    period: date = Field(description="the UTC day, or the month's first day")
    kind: str = Field(description="messages, readings, api_requests, ws_minutes, ...")
    transport: str = Field(description="the label: transport, channel or caller kind; '' none")
    n: int


class UsageOut(BaseModel):
    """An organization's usage between two days (inclusive), by day or month."""

    organization_id: uuid.UUID
    granularity: Granularity
    from_: date = Field(alias="from")
    to: date
    rows: list[UsageRowOut]
    totals: dict[str, int] = Field(
        description="per kind over the whole period: counters summed, levels their largest"
    )

    model_config = {"populate_by_name": True}

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        """The answer for a service result."""
        from fleetcore.usage.kinds import LEVELS, UsageKind

        totals: dict[str, int] = {}
        by_period: dict[tuple[date, str], int] = {}
        for row in usage.rows:
            by_period[(row.period, row.kind)] = by_period.get((row.period, row.kind), 0) + row.n
        for (_, kind), n in by_period.items():
            level = kind in LEVELS or kind == UsageKind.DEVICES_ACTIVE
            totals[kind] = max(totals.get(kind, 0), n) if level else totals.get(kind, 0) + n
        return cls(
            organization_id=usage.organization_id,
            granularity="month" if usage.granularity == "month" else "day",
            from_=usage.start,
            to=usage.end,
            rows=[
                UsageRowOut(period=r.period, kind=r.kind, transport=r.transport, n=r.n)
                for r in usage.rows
            ],
            totals=totals,
        )
