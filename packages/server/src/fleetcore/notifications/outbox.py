"""The outbox: deliveries staged in the transaction of the change they announce.

A committed alert change always has its deliveries and a rolled-back one has none; the
dispatcher sends them after the commit.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import utcnow
from fleetcore.notifications.models import DeliveryStatus, NotificationChannel, NotificationDelivery

if TYPE_CHECKING:
    from fleetcore.alerts.events import AlertChange


def matches(channel: NotificationChannel, *, severity: str, rule_id: str, device_id: str) -> bool:
    """Whether an alert event passes the channel's filters (an empty filter passes all)."""
    return (
        (not channel.severities or severity in channel.severities)
        and (not channel.rule_ids or rule_id in channel.rule_ids)
        and (not channel.device_ids or device_id in channel.device_ids)
    )


def delivery(
    channel: NotificationChannel,
    event: str,
    data: dict[str, Any],
    *,
    alert_id: uuid.UUID | None = None,
) -> NotificationDelivery:
    """A pending delivery of `event` to `channel`; its body is fixed (and signed) as is."""
    delivery_id = uuid.uuid4()
    now = utcnow()
    body = {
        "id": str(delivery_id),
        "event": event,
        "created_at": now.isoformat(),
        "organization_id": str(channel.organization_id),
        "channel_id": str(channel.id),
        **data,
    }
    return NotificationDelivery(
        id=delivery_id,
        organization_id=channel.organization_id,
        channel_id=channel.id,
        alert_id=alert_id,
        event=event,
        body=orjson.dumps(body).decode(),
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


async def stage_alert_change(session: AsyncSession, change: AlertChange) -> int:
    """Add a delivery for every enabled channel of the organization the change matches."""
    channels = (
        await session.scalars(
            select(NotificationChannel).where(
                NotificationChannel.organization_id == change.organization_id,
                NotificationChannel.enabled.is_(True),
            )
        )
    ).all()
    staged = 0
    alert = change.alert
    for channel in channels:
        if matches(
            channel,
            severity=str(alert.get("severity")),
            rule_id=str(change.rule_id),
            device_id=str(change.device_id),
        ):
            alert_id = uuid.UUID(str(alert["id"]))
            session.add(delivery(channel, change.event, {"alert": alert}, alert_id=alert_id))
            staged += 1
    return staged
