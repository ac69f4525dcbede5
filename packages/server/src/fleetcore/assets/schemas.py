"""Request and response bodies of the asset and relation endpoints."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_PROPERTIES_BYTES = 16 * 1024
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class AssetType(StrEnum):
    """What an asset is; the tree does not force an order of types."""

    SITE = "site"
    AREA = "area"
    LINE = "line"
    MACHINE = "machine"
    OTHER = "other"


class EntityType(StrEnum):
    """What a relation end may be."""

    DEVICE = "device"
    ASSET = "asset"


class Direction(StrEnum):
    """Which relations of an entity to list."""

    FROM = "from"
    TO = "to"
    BOTH = "both"


def _clean_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; other control characters are never meant.
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


def _json_properties(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
    except ValueError:
        raise ValueError("NaN and Infinity are not JSON") from None
    if size > MAX_PROPERTIES_BYTES:
        raise ValueError(f"at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_clean_text)]
Description = Annotated[str, Field(max_length=2000), AfterValidator(_clean_text)]
Properties = Annotated[dict[str, Any], AfterValidator(_json_properties)]
RelationType = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$", examples=["contains"]),
]


class AssetIn(BaseModel):
    """POST /api/v1/assets."""

    name: Name
    type: AssetType
    parent_id: uuid.UUID | None = None
    description: Description = ""
    properties: Properties = Field(default_factory=dict)


class AssetPatch(BaseModel):
    """PATCH /api/v1/assets/{id}: the fields sent change; `"parent_id": null` makes a root."""

    name: Name | None = None
    type: AssetType | None = None
    parent_id: uuid.UUID | None = None
    description: Description | None = None
    properties: Properties | None = None


class AssetOut(BaseModel):
    """An asset."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    parent_id: uuid.UUID | None
    name: str
    type: AssetType
    description: str
    properties: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class AssetNode(BaseModel):
    """An asset in the tree, with its children by name."""

    id: uuid.UUID
    parent_id: uuid.UUID | None
    name: str
    type: AssetType
    children: list[AssetNode] = Field(default_factory=list)


class AssetDeviceOut(BaseModel):
    """A device as listed under an asset."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    asset_id: uuid.UUID | None
    name: str
    serial_number: str
    status: str
    created_at: datetime


class RelationIn(BaseModel):
    """POST /api/v1/relations: a typed edge from one entity to another."""

    from_type: EntityType
    from_id: uuid.UUID
    to_type: EntityType
    to_id: uuid.UUID
    type: RelationType


class RelationOut(BaseModel):
    """A relation."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    from_type: EntityType
    from_id: uuid.UUID
    to_type: EntityType
    to_id: uuid.UUID
    type: str
    created_at: datetime
