"""Request and response bodies of plate reads, visits, plate history and watchlists."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from fleetcore.alerts.models import Severity

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Description = Annotated[str, StringConstraints(max_length=2000)]
PlateText = Annotated[str, StringConstraints(min_length=1, max_length=32, strip_whitespace=True)]
Note = Annotated[str, StringConstraints(max_length=500)]
MAX_ENTRIES_PER_REQUEST = 1000


class PlateReadOut(BaseModel):
    """One plate read, with its camera device's name, its image's size and the enabled
    watchlists the plate is on."""

    id: int
    device_id: uuid.UUID
    device_name: str
    camera: str | None
    ts: datetime
    plate: str = Field(description="the text as read")
    plate_norm: str = Field(description="normalised: no spaces or dashes, ASCII digits")
    region: str | None = Field(description="province or region, when read")
    confidence: float
    direction: str | None
    lane: int | None
    vehicle_type: str | None
    vehicle_color: str | None
    bbox: list[int] | None = Field(description="[x, y, w, h] in the image's pixels")
    media_id: uuid.UUID | None = Field(description="the image: GET /api/v1/media/{media_id}")
    image_width: int | None
    image_height: int | None
    visit_id: int
    watchlists: list[str] = Field(description="names of enabled watchlists the plate is on")


class PlateVisitOut(BaseModel):
    """Reads of one plate on one camera close together (the visit window): one passing."""

    id: int
    device_id: uuid.UUID
    device_name: str
    camera: str | None
    plate_norm: str
    first_ts: datetime
    last_ts: datetime
    reads: int
    best_confidence: float


class PlateCameraOut(BaseModel):
    """A plate's visits on one camera."""

    device_id: uuid.UUID
    device_name: str
    camera: str | None
    visits: int
    first_seen: datetime
    last_seen: datetime


class PlateHistoryOut(BaseModel):
    """A plate across cameras: when first and last seen, how often, where."""

    plate_norm: str
    plate: str = Field(description="display text, as last read")
    region: str | None
    first_seen: datetime
    last_seen: datetime
    reads: int
    visits: int
    cameras: list[PlateCameraOut]
    recent_visits: list[PlateVisitOut]


class WatchlistOut(BaseModel):
    """A watchlist; rule_id is the rule its alerts belong to."""

    id: uuid.UUID
    name: str
    description: str
    severity: Severity
    min_confidence: float
    enabled: bool
    entries: int
    rule_id: uuid.UUID | None


class WatchlistIn(BaseModel):
    """POST /api/v1/watchlists."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    description: Description = ""
    severity: Severity = Severity.MAJOR
    min_confidence: float = Field(0.8, ge=0, le=1, description="alert from this confidence on")
    enabled: bool = True


class WatchlistPatch(BaseModel):
    """PATCH /api/v1/watchlists/{id}: the fields to change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    description: Description | None = None
    severity: Severity | None = None
    min_confidence: float | None = Field(None, ge=0, le=1)
    enabled: bool | None = None


class EntryIn(BaseModel):
    """A plate to watch, however typed (it is normalised), with a note."""

    model_config = ConfigDict(extra="forbid")

    plate: PlateText
    note: Note = ""


class EntriesIn(BaseModel):
    """POST /api/v1/watchlists/{id}/entries: one entry or many."""

    model_config = ConfigDict(extra="forbid")

    entries: list[EntryIn] = Field(min_length=1, max_length=MAX_ENTRIES_PER_REQUEST)


class EntryOut(BaseModel):
    """A watchlist entry."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    plate: str
    plate_key: str
    note: str
    created_at: datetime


class EntriesAdded(BaseModel):
    """What an entries request did: the added entries, and the plates already listed (or
    given twice) that were skipped."""

    added: list[EntryOut]
    duplicates: list[str] = Field(description="plates as given whose key the list holds already")


class WatchlistDetailOut(WatchlistOut):
    """A watchlist with its entries."""

    entry_list: list[EntryOut]
