"""DEX audit and sales API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditOutcomeOut(BaseModel):
    """What became of one ST set of an upload."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    set_index: int
    status: str  # accepted | damaged | foreign | rejected
    accounted: bool
    duplicate: bool  # stored by an earlier upload of the same file
    warnings: list[dict[str, Any]]


class DexUploadOut(BaseModel):
    """An upload's answer; sent once the audits and their telemetry are committed."""

    stored: int
    duplicates: int
    warnings: list[dict[str, Any]]  # the file's own (outside any set)
    audits: list[AuditOutcomeOut]


class AuditOut(BaseModel):
    """A stored audit (one ST set)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: uuid.UUID
    set_index: int
    content_hash: str
    source: str
    uploaded_by: uuid.UUID | None
    received_at: datetime
    read_at: datetime
    machine_serial: str | None
    status: str
    accounted: bool
    warnings: list[dict[str, Any]]
    reviewed_by: uuid.UUID | None
    reviewed_at: datetime | None


class AuditDetailOut(AuditOut):
    """An audit with its parsed counters and how it was accounted (summary.accounting)."""

    summary: dict[str, Any]


class SalesRowOut(BaseModel):
    """Sums of one slot, product (key = product id, null: none) or UTC day."""

    model_config = ConfigDict(from_attributes=True)

    key: str | None
    units: int
    revenue: Decimal
    cash_units: int
    cash_revenue: Decimal
    cashless_units: int
    cashless_revenue: Decimal
    test_vends: int
    free_vends: int


class SalesOut(BaseModel):
    """A machine's sales in a range."""

    group: str
    since: datetime | None
    until: datetime | None
    items: list[SalesRowOut]
