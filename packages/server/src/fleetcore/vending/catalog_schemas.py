"""Request and response bodies of products, machines, cabinets, planograms and suggestions."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from fleetcore.devices.schemas import ONE_LINE, Name, not_null

# Counts and positions are strict integers: JSON true/false is not 1/0 (pydantic would
# coerce it). Money as sent: at most 4 decimals (the storage scale), never negative, far below the
# BigInteger range the Money type stores it in.
MoneyIn = Annotated[Decimal, Field(ge=0, le=1_000_000, decimal_places=4, allow_inf_nan=False)]
Sku = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=ONE_LINE)
]
Category = Annotated[str, StringConstraints(strip_whitespace=True, max_length=64, pattern=ONE_LINE)]
Text = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
Location = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=200, pattern=ONE_LINE)
]
DexSerial = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=ONE_LINE)
]
CabinetName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=ONE_LINE)
]
# A DEX selection code (PA101): alphanumeric, 1 to 6 characters.
SLOT_PATTERN = r"^[A-Za-z0-9]{1,6}$"
SlotCode = Annotated[str, StringConstraints(strip_whitespace=True, pattern=SLOT_PATTERN)]
Position = Annotated[int, Field(ge=0, le=1000, strict=True)]
EAN_LENGTHS = (8, 12, 13, 14)


def ean_check_digit_ok(code: str) -> bool:
    """True for a GS1 code (EAN-8, UPC-A, EAN-13, GTIN-14) whose last digit checks."""
    if len(code) not in EAN_LENGTHS or not re.fullmatch(r"[0-9]+", code):
        return False
    body = [int(c) for c in code[:-1]]
    # From the digit next to the check digit leftwards, weights 3, 1, 3, 1, ...
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == int(code[-1])


def _ean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not ean_check_digit_ok(value):
        raise ValueError("an EAN/GTIN of 8, 12, 13 or 14 digits with a valid check digit")
    return value


# -- products ----------------------------------------------------------------------------


class ProductIn(BaseModel):
    """POST /api/v1/vending/products."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    sku: Sku | None = None
    ean: str | None = Field(None, max_length=14)
    category: Category = ""
    unit_cost: MoneyIn | None = None
    default_price: MoneyIn | None = None
    case_size: int | None = Field(None, ge=1, le=10_000, strict=True)

    check_ean = field_validator("ean")(_ean)


class ProductPatch(BaseModel):
    """PATCH /api/v1/vending/products/{id}: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    sku: Sku | None = None
    ean: str | None = Field(None, max_length=14)
    category: Category | None = None
    unit_cost: MoneyIn | None = None
    default_price: MoneyIn | None = None
    case_size: int | None = Field(None, ge=1, le=10_000, strict=True)

    reject_null = field_validator("name", "category", mode="before")(not_null)
    check_ean = field_validator("ean")(_ean)


class ProductOut(BaseModel):
    """A product; archived ones stay readable so past sales keep their name."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    sku: str | None
    ean: str | None
    category: str
    unit_cost: Decimal | None
    default_price: Decimal | None
    case_size: int | None
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ProductDeleted(BaseModel):
    """What DELETE did: removed, or archived because history refers to the product."""

    id: uuid.UUID
    outcome: Literal["deleted", "archived"]


# -- machines and cabinets ---------------------------------------------------------------


class CabinetIn(BaseModel):
    """A cabinet to add to a machine."""

    model_config = ConfigDict(extra="forbid")

    name: CabinetName
    position: Position = 0


class CabinetPatch(BaseModel):
    """PATCH /api/v1/vending/cabinets/{id}."""

    model_config = ConfigDict(extra="forbid")

    name: CabinetName | None = None
    position: Position | None = None

    reject_null = field_validator("name", "position", mode="before")(not_null)


class MachineIn(BaseModel):
    """POST /api/v1/vending/machines: make a device of the organization a vending machine."""

    model_config = ConfigDict(extra="forbid")

    device_id: uuid.UUID
    location: Location = ""
    route_id: uuid.UUID | None = None
    dex_serial: DexSerial | None = None
    cabinets: list[CabinetIn] | None = Field(
        None, min_length=1, max_length=16, description="default: one cabinet named main"
    )

    @field_validator("cabinets")
    @classmethod
    def _unique_names(cls, value: list[CabinetIn] | None) -> list[CabinetIn] | None:
        if value is not None and len({c.name for c in value}) != len(value):
            raise ValueError("cabinet names must be unique")
        return value


class MachinePatch(BaseModel):
    """PATCH /api/v1/vending/machines/{device_id}: null clears route_id and dex_serial."""

    model_config = ConfigDict(extra="forbid")

    location: Location | None = None
    route_id: uuid.UUID | None = None
    dex_serial: DexSerial | None = None

    reject_null = field_validator("location", mode="before")(not_null)


class MachineOut(BaseModel):
    """A vending machine with the name and serial of its device."""

    device_id: uuid.UUID
    name: str
    serial_number: str
    location: str
    route_id: uuid.UUID | None
    dex_serial: str | None
    currency: str | None
    last_audit_at: datetime | None
    created_at: datetime


class CabinetOut(BaseModel):
    """A cabinet of a machine."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: uuid.UUID
    name: str
    position: int
    created_at: datetime


class SlotIn(BaseModel):
    """One slot of a planogram version."""

    model_config = ConfigDict(extra="forbid")

    slot: SlotCode
    product_id: uuid.UUID | None = Field(None, description="null: an empty slot")
    capacity: int = Field(ge=1, le=999, strict=True)
    par_level: int = Field(ge=0, le=999, strict=True)
    price: MoneyIn | None = Field(None, description="default: the product's default price")


class SlotOut(BaseModel):
    """A slot of a planogram version, with its product's name."""

    slot: str
    product_id: uuid.UUID | None
    product_name: str | None
    capacity: int
    par_level: int
    price: Decimal | None


class StockedSlotOut(SlotOut):
    """A current slot with what is known of its stock (None: unknown)."""

    estimated_stock: int | None
    sold_out_at: datetime | None


class CabinetDetail(CabinetOut):
    """A cabinet with its current planogram and estimated stock per slot."""

    planogram_id: uuid.UUID | None
    planogram_version: int | None
    slots: list[StockedSlotOut]


class MachineDetail(MachineOut):
    """GET /api/v1/vending/machines/{device_id}."""

    cabinets: list[CabinetDetail]


# -- planograms --------------------------------------------------------------------------


class PlanogramIn(BaseModel):
    """PUT /api/v1/vending/cabinets/{id}/planogram: the next version, whole."""

    model_config = ConfigDict(extra="forbid")

    slots: list[SlotIn] = Field(max_length=500)
    note: Text = ""

    @field_validator("slots")
    @classmethod
    def _slots(cls, value: list[SlotIn]) -> list[SlotIn]:
        seen: set[str] = set()
        for item in value:
            if item.slot in seen:
                raise ValueError(f"slot {item.slot} appears twice")
            seen.add(item.slot)
            if item.par_level > item.capacity:
                raise ValueError(f"slot {item.slot}: par_level exceeds capacity")
        return value


class PlanogramSummary(BaseModel):
    """A planogram version without its slots."""

    id: uuid.UUID
    cabinet_id: uuid.UUID
    version: int
    effective_from: datetime
    source: str
    note: str
    created_by: uuid.UUID | None
    created_at: datetime


class PlanogramOut(PlanogramSummary):
    """A planogram version with its slots."""

    slots: list[SlotOut]


class SlotChangeOut(BaseModel):
    """A slot whose fields differ between two versions: field -> [before, after]."""

    slot: str
    fields: dict[str, list[Any]]


class PlanogramDiff(BaseModel):
    """GET /api/v1/vending/planograms/{id}/diff: what `planogram_id` changed from `against`."""

    planogram_id: uuid.UUID
    against_id: uuid.UUID | None
    added: list[SlotOut]
    removed: list[SlotOut]
    changed: list[SlotChangeOut]


# -- suggestions -------------------------------------------------------------------------


class SuggestedChangeOut(BaseModel):
    """One explained change; apply a subset by their ids."""

    id: str
    kind: Literal["move", "par", "swap"]
    slot: str
    from_slot: str | None = None
    amount: int | None = None
    par_level: int | None = None
    product_id: uuid.UUID | None = None
    price: Decimal | None = None
    reason: str


class SuggestionOut(BaseModel):
    """GET /api/v1/vending/cabinets/{id}/suggestion: advice, never applied by itself."""

    cabinet_id: uuid.UUID
    status: Literal["ok", "insufficient_data"]
    missing: list[str]
    based_on_version: int | None
    window_days: int
    sales_days: float
    visits: int
    days_between_visits: float | None
    changes: list[SuggestedChangeOut]
    slots: list[SlotOut]


class SuggestionApply(BaseModel):
    """POST /api/v1/vending/cabinets/{id}/suggestion/apply."""

    model_config = ConfigDict(extra="forbid")

    based_on_version: int = Field(ge=1, strict=True)
    changes: list[Annotated[str, StringConstraints(max_length=40)]] | None = Field(
        None, max_length=500, description="ids of the changes to apply; default all"
    )
