"""Request and response bodies of routes, service orders and pick lists."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=2000)]
MAX_IDS = 500
# Money is stored as an integer of 1/10,000 (vending.models.Money): at most 4 decimals.
Cash = Annotated[Decimal, Field(ge=0, le=Decimal("1000000000"), decimal_places=4)]


class OrderState(StrEnum):
    """Where a service order is: draft → issued → in_progress → completed (or cancelled)."""

    DRAFT = "draft"
    ISSUED = "issued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# -- routes --------------------------------------------------------------------------------


class RouteIn(BaseModel):
    """POST /api/v1/vending/routes."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Text = ""


class RoutePatch(BaseModel):
    """PATCH /api/v1/vending/routes/{route_id}: the fields to change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Text | None = None


class RouteMachinesIn(BaseModel):
    """PUT .../machines: the route's machines, in visit order (replaces the list)."""

    model_config = ConfigDict(extra="forbid")

    device_ids: list[uuid.UUID] = Field(max_length=MAX_IDS)


class RouteDriversIn(BaseModel):
    """PUT .../drivers: the users (driver role) assigned to the route (replaces the list)."""

    model_config = ConfigDict(extra="forbid")

    user_ids: list[uuid.UUID] = Field(max_length=MAX_IDS)


class RouteMachineOut(BaseModel):
    """A machine of a route, in visit order."""

    device_id: uuid.UUID
    name: str
    location: str
    position: int


class RouteOut(BaseModel):
    """A route with its machines and drivers."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    machines: list[RouteMachineOut] = []
    driver_ids: list[uuid.UUID] = []


# -- service orders ------------------------------------------------------------------------


class OrderIn(BaseModel):
    """POST /api/v1/vending/routes/{route_id}/service-orders."""

    model_config = ConfigDict(extra="forbid")

    service_date: date
    driver_id: uuid.UUID | None = None
    note: Text = ""


class CompleteIn(BaseModel):
    """POST .../complete: skip_unvisited lets machines without a recorded visit stay so."""

    model_config = ConfigDict(extra="forbid")

    skip_unvisited: bool = False


class PlanIn(BaseModel):
    """PATCH .../lines/{line_id}: the planned quantity (draft orders only)."""

    model_config = ConfigDict(extra="forbid")

    planned: int = Field(ge=0, le=100_000, strict=True)


class FillIn(BaseModel):
    """PUT .../lines/{line_id}: what the driver put in the slot (0..capacity)."""

    model_config = ConfigDict(extra="forbid")

    filled: int = Field(ge=0, le=100_000, strict=True)
    sold_out: bool = Field(False, description="the slot was found empty")


class VisitIn(BaseModel):
    """PUT .../visits/{device_id}: cash taken from the machine (0 when none)."""

    model_config = ConfigDict(extra="forbid")

    cash_collected: Cash


class OrderOut(BaseModel):
    """A service order without its lines."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    route_id: uuid.UUID
    service_date: date
    state: OrderState
    driver_id: uuid.UUID | None
    note: str
    created_by: uuid.UUID | None
    created_at: datetime
    issued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    cancelled_at: datetime | None


class VisitOut(BaseModel):
    """A machine of the order, in visit order."""

    model_config = ConfigDict(from_attributes=True)

    device_id: uuid.UUID
    position: int
    cash_collected: Decimal | None
    serviced_at: datetime | None


class LineOut(BaseModel):
    """One slot to fill."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: uuid.UUID
    cabinet_id: uuid.UUID
    slot: str
    product_id: uuid.UUID | None
    capacity: int
    par_level: int
    estimated_stock: int | None
    stock_known: bool
    planned: int
    filled: int | None
    sold_out: bool
    filled_at: datetime | None
    filled_by: uuid.UUID | None


class ProductTotal(BaseModel):
    """What the warehouse prepares for one product."""

    product_id: uuid.UUID | None
    name: str | None
    sku: str | None
    units: int
    case_size: int | None
    cases: int | None


class CabinetPick(BaseModel):
    """A cabinet's slots to fill, by slot code."""

    cabinet_id: uuid.UUID
    name: str
    lines: list[LineOut]


class MachinePick(BaseModel):
    """One stop of the driver: the visit and its cabinets' lines."""

    device_id: uuid.UUID
    name: str
    location: str
    visit: VisitOut
    cabinets: list[CabinetPick]


class OrderDetail(OrderOut):
    """A service order with its pick list for the warehouse and for the driver."""

    warehouse: list[ProductTotal]
    stops: list[MachinePick]
