"""GET / PUT /api/v1/housekeeping/retention: the days an organization keeps the tables it may
decide (audit events, device events, dead letters); admins."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.housekeeping import service
from fleetcore.housekeeping.service import MAX_DAYS, TableRetention

router = APIRouter(prefix="/api/v1/housekeeping", tags=["housekeeping"])

Days = Field(
    None, ge=0, le=MAX_DAYS, description="days kept; 0 = forever; null = the platform default"
)


class RetentionIn(BaseModel):
    """PUT body: the tables to change; a table left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    audit_events: int | None = Days
    device_events: int | None = Days
    dead_letters: int | None = Days


class TableRetentionOut(BaseModel):
    """One table's effective days; is_default until the organization sets its own."""

    table: str
    days: int = Field(description="days kept; 0 = forever")
    default_days: int
    min_days: int = Field(description="the shortest the organization may set, besides 0")
    is_default: bool
    updated_at: datetime | None

    @classmethod
    def of(cls, view: TableRetention) -> TableRetentionOut:
        """From the service's view."""
        return cls(
            table=view.table,
            days=view.days,
            default_days=view.default_days,
            min_days=view.min_days,
            is_default=view.is_default,
            updated_at=view.updated_at,
        )


class RetentionOut(BaseModel):
    """Every table the organization may decide."""

    tables: list[TableRetentionOut]


@router.get("/retention", summary="The organization's retention of its records (admins)")
async def get_retention(
    session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """The platform defaults until the organization sets its own."""
    views = await service.get_retention(session, principal, settings=settings)
    return RetentionOut(tables=[TableRetentionOut.of(view) for view in views])


@router.put("/retention", summary="Set the organization's retention of its records (admins)")
async def put_retention(
    body: RetentionIn, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> RetentionOut:
    """Applies at the next housekeeping run; audited. Only the tables given change."""
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    views = await service.set_retention(session, principal, changes=changes, settings=settings)
    return RetentionOut(tables=[TableRetentionOut.of(view) for view in views])
