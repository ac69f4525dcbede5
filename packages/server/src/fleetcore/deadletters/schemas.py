"""Response bodies of dead letters."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

TransportName = Literal["mqtt", "http"]


class DeadLetterOut(BaseModel):
    """A refused payload: where from, why, and its first KiB as text."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    organization_id: uuid.UUID | None
    device_id: uuid.UUID | None
    transport: str
    topic: str | None
    reason: str
    detail: str
    payload_excerpt: str
    payload_size: int
    received_at: datetime
