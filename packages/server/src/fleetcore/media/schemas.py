"""Request and response bodies of media."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetcore.config import MEDIA_MAX_BYTES_CEILING

MAX_RETENTION_DAYS = 3650  # ten years; longer is "forever" (0)
ImageType = Literal["image/jpeg", "image/png", "image/webp"]


class MediaStored(BaseModel):
    """A file just stored: `part` names its multipart part (None for an upload URL's PUT)."""

    id: uuid.UUID
    part: str | None = None
    content_type: str
    bytes: int
    width: int | None
    height: int | None


class MediaOut(BaseModel):
    """A stored media as users see it (never its storage key)."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_id: uuid.UUID
    event_id: int | None
    content_type: str
    bytes: int
    width: int | None
    height: int | None
    sha256: str | None
    thumb_bytes: int
    created_at: datetime
    attached_at: datetime | None


class UploadIn(BaseModel):
    """POST /api/v1/devices/me/media/uploads: what the device is about to send."""

    model_config = ConfigDict(extra="forbid")

    content_type: ImageType
    bytes: int = Field(ge=1, le=MEDIA_MAX_BYTES_CEILING, description="the file's size")


class UploadOut(BaseModel):
    """Where to PUT the bytes (no other auth; single use) and until when."""

    media_id: uuid.UUID
    upload_url: str
    expires_at: datetime


class LinkOut(BaseModel):
    """A signed URL reading the media without other auth, until expires_at."""

    url: str
    expires_at: datetime


class DeviceUsageOut(BaseModel):
    """One device's stored media."""

    device_id: uuid.UUID
    bytes: int
    files: int


class UsageOut(BaseModel):
    """The organization's stored media (images and thumbnails), in all and by device."""

    bytes: int
    files: int
    devices: list[DeviceUsageOut]


class RetentionIn(BaseModel):
    """PUT /api/v1/media/retention."""

    model_config = ConfigDict(extra="forbid")

    days: int = Field(ge=0, le=MAX_RETENTION_DAYS, description="days media are kept; 0 = forever")


class RetentionOut(BaseModel):
    """The effective media retention; is_default until the organization sets its own."""

    days: int
    is_default: bool
    updated_at: datetime | None


class MediaRemoved(BaseModel):
    """DELETE /api/v1/devices/{id}/media: what was removed (files include thumbnails)."""

    deleted_files: int
    deleted_bytes: int
