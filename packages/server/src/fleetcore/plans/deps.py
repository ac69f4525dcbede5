"""What the plans routes and pages take from the app: the plan cache and the usage meter."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleetcore.db import Database
from fleetcore.plans.cache import PlanCache
from fleetcore.plans.quota import UsageToday


class PlanChanges:
    """Reloads this process's plan cache after a change (other processes: within REFRESH_S)."""

    def __init__(self, request: Request) -> None:
        self._cache: PlanCache = request.app.state.plan_cache
        self._database: Database = request.app.state.database

    async def reload(self) -> None:
        """The change applies here at once."""
        await self._cache.reload(self._database)


def usage_meter(request: Request) -> UsageToday | None:
    """The usage meter (fleetcore.usage), when the app has one."""
    meter: UsageToday | None = getattr(request.app.state, "usage_meter", None)
    return meter


PlanChangesDep = Annotated[PlanChanges, Depends(PlanChanges)]
MeterDep = Annotated[UsageToday | None, Depends(usage_meter)]
