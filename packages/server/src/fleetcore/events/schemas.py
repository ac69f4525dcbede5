"""Response bodies of device events."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from fleetcore.media.schemas import MediaStored

Severity = Literal["critical", "major", "minor", "warning", "info"]


class EventOut(BaseModel):
    """One stored event; `ts` is the device's time, `received_at` the server's."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: uuid.UUID
    ts: datetime
    type: str
    severity: str
    data: dict[str, Any]
    received_at: datetime


class EventsStored(BaseModel):
    """The answer to a device's events: how many were stored (all of them, committed), and
    the files of a multipart request (left out otherwise)."""

    stored: int
    media: list[MediaStored] | None = None
