"""Request and response bodies of notification channels, deliveries and notifications."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from fleetcore.alerts.models import Severity
from fleetcore.notifications.models import ChannelType, DeliveryStatus

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=500)]


class _Filters(BaseModel):
    severities: list[Severity] | None = Field(None, max_length=10)
    rule_ids: list[uuid.UUID] | None = Field(None, max_length=500)
    device_ids: list[uuid.UUID] | None = Field(None, max_length=500)


class ChannelIn(_Filters):
    """POST /api/v1/notification-channels. Filters left out or empty match everything."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    type: ChannelType
    url: AnyHttpUrl | None = Field(None, description="webhook: http(s) URL that receives POSTs")
    secret: Secret | None = Field(None, description="webhook: HMAC key; never shown again")
    recipients: list[EmailStr] | None = Field(None, max_length=50, description="email")
    enabled: bool = True

    @model_validator(mode="after")
    def _fits_type(self) -> ChannelIn:
        if self.type is ChannelType.WEBHOOK:
            if self.url is None:
                raise ValueError("a webhook channel needs a url")
            if self.secret is None:
                raise ValueError("a webhook channel needs a secret (16+ characters)")
        if self.type is ChannelType.EMAIL and not self.recipients:
            raise ValueError("an email channel needs recipients")
        if self.type is not ChannelType.WEBHOOK and (self.url or self.secret):
            raise ValueError("url and secret are for webhook channels")
        if self.type is not ChannelType.EMAIL and self.recipients:
            raise ValueError("recipients are for email channels")
        return self


class ChannelPatch(_Filters):
    """PATCH /api/v1/notification-channels/{id}: the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    url: AnyHttpUrl | None = None
    secret: Secret | None = None
    recipients: list[EmailStr] | None = Field(None, min_length=1, max_length=50)
    enabled: bool | None = None


class ChannelOut(BaseModel):
    """A channel as the API shows it: never its secret, only whether it has one."""

    id: uuid.UUID
    name: str
    type: ChannelType
    url: str | None
    recipients: list[str] | None
    has_secret: bool
    severities: list[Severity]
    rule_ids: list[uuid.UUID]
    device_ids: list[uuid.UUID]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class DeliveryOut(BaseModel):
    """One event for one channel, and how sending it went."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel_id: uuid.UUID
    alert_id: uuid.UUID | None
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class NotificationOut(BaseModel):
    """An in-app notification."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    channel_id: uuid.UUID | None
    alert_id: uuid.UUID | None
    event: str
    title: str
    payload: dict[str, Any]
    read_at: datetime | None
    created_at: datetime
