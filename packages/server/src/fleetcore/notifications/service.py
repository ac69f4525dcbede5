"""Notification channels for admins, their deliveries, and in-app notifications for all."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.models import Severity
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.config import Settings
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.notifications import egress
from fleetcore.notifications.crypto import SecretBox
from fleetcore.notifications.models import (
    ChannelType,
    DeliveryStatus,
    Notification,
    NotificationChannel,
    NotificationDelivery,
)
from fleetcore.notifications.outbox import delivery
from fleetcore.notifications.schemas import ChannelIn, ChannelOut, ChannelPatch
from fleetcore.pagination import page_of, paginate
from fleetcore.rules.models import Rule

Wake = Callable[[], None]


def channel_out(channel: NotificationChannel) -> ChannelOut:
    """The channel as the API shows it (no secret)."""
    return ChannelOut(
        id=channel.id,
        name=channel.name,
        type=ChannelType(channel.type),
        url=channel.config.get("url"),
        recipients=channel.config.get("recipients"),
        has_secret=channel.secret_encrypted is not None,
        severities=[Severity(s) for s in channel.severities],
        rule_ids=[uuid.UUID(r) for r in channel.rule_ids],
        device_ids=[uuid.UUID(d) for d in channel.device_ids],
        enabled=channel.enabled,
        created_at=channel.created_at,
        updated_at=channel.updated_at,
    )


def _not_found() -> NotFound:
    return NotFound("notification channel not found", code="CHANNEL_NOT_FOUND")


def _audit(session: AsyncSession, principal: Principal, action: str, channel: Any) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=channel.organization_id,
        target_type="notification_channel",
        target_id=channel.id,
        details={"name": channel.name, "type": channel.type, "enabled": channel.enabled},
    )


async def _check_filters(
    session: AsyncSession, principal: Principal, values: dict[str, Any]
) -> None:
    """Rules and devices in filters must be the organization's (422 names the field)."""
    for field, model in (("rule_ids", Rule), ("device_ids", Device)):
        ids = {uuid.UUID(str(i)) for i in values.get(field) or []}
        if not ids:
            continue
        found = set(
            (
                await session.scalars(
                    select(model.id).where(
                        model.id.in_(ids), model.organization_id == principal.org_id
                    )
                )
            ).all()
        )
        missing = sorted(str(i) for i in ids - found)
        if missing:
            raise Invalid(
                f"not in this organization: {', '.join(missing)}",
                code="FILTER_NOT_FOUND",
                details={"field": field, "missing": missing},
            )


def _filters(values: dict[str, Any]) -> dict[str, list[str]]:
    return {
        field: sorted({str(v) for v in values[field] or []})
        for field in ("severities", "rule_ids", "device_ids")
        if field in values
    }


async def _flush_named(session: AsyncSession, name: str) -> None:
    """Flush the channel; a name the organization already uses is a 409."""
    await flush_or_conflict(
        session,
        Conflict(
            f"a notification channel named {name!r} exists already",
            code="CHANNEL_NAME_TAKEN",
            details={"field": "name"},
        ),
    )


async def create_channel(
    session: AsyncSession, principal: Principal, settings: Settings, box: SecretBox, data: ChannelIn
) -> NotificationChannel:
    """A new channel (admins); it receives the organization's alert events from now on."""
    principal.require(Role.ADMIN)
    if data.type is ChannelType.EMAIL and not settings.smtp_host:
        raise Invalid(
            "email channels need an SMTP server (FLEETCORE_SMTP_HOST)",
            code="SMTP_NOT_CONFIGURED",
            details={"field": "type"},
        )
    values = data.model_dump(mode="json")
    await _check_filters(session, principal, values)
    config: dict[str, Any] = {}
    if data.type is ChannelType.WEBHOOK:
        config["url"] = str(data.url)
        await _check_webhook_url(settings, config["url"])
    if data.type is ChannelType.EMAIL:
        config["recipients"] = values["recipients"]
    channel = NotificationChannel(
        organization_id=principal.org_id,
        name=data.name,
        type=data.type,
        config=config,
        secret_encrypted=box.encrypt(data.secret) if data.secret else None,
        enabled=data.enabled,
        **_filters(values),
    )
    session.add(channel)
    await _flush_named(session, data.name)
    _audit(session, principal, "notification_channel.create", channel)
    await session.commit()
    return channel


async def get_channel(
    session: AsyncSession, principal: Principal, channel_id: uuid.UUID
) -> NotificationChannel:
    """One channel of the caller's organization (admins)."""
    principal.require(Role.ADMIN)
    channel = await session.scalar(
        select(NotificationChannel).where(
            NotificationChannel.id == channel_id,
            NotificationChannel.organization_id == principal.org_id,
        )
    )
    if channel is None:
        raise _not_found()
    return channel


async def list_channels(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[NotificationChannel], str | None]:
    """The organization's channels by name (admins)."""
    principal.require(Role.ADMIN)
    query = select(NotificationChannel).where(
        NotificationChannel.organization_id == principal.org_id
    )
    query = paginate(
        query,
        sort=NotificationChannel.name,
        id_column=NotificationChannel.id,
        cursor=cursor,
        limit=limit,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="name")


async def _check_webhook_url(settings: Settings, url: str) -> None:
    """Refuse a URL whose host is not a public address (unless private networks are allowed:
    see notifications/egress.py); the same check holds at every connection."""
    if egress.private_allowed(settings):
        return
    reason = await egress.check_url(url)
    if reason is not None:
        raise Invalid(reason, code="WEBHOOK_URL_FORBIDDEN", details={"field": "url"})


async def update_channel(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    box: SecretBox,
    channel_id: uuid.UUID,
    data: ChannelPatch,
) -> NotificationChannel:
    """Change a channel (admins); url and secret are a webhook's, recipients an email's."""
    channel = await get_channel(session, principal, channel_id)
    given = data.model_dump(mode="json", exclude_unset=True)
    kind = ChannelType(channel.type)
    for field, owner in (("url", ChannelType.WEBHOOK), ("secret", ChannelType.WEBHOOK)):
        if field in given and kind is not owner:
            raise Invalid(f"{field} is for webhook channels", details={"field": field})
    if "recipients" in given and kind is not ChannelType.EMAIL:
        raise Invalid("recipients are for email channels", details={"field": "recipients"})
    for field in ("url", "secret", "recipients", "name", "enabled"):
        if field in given and given[field] is None:
            raise Invalid(f"{field} cannot be null", details={"field": field})
    await _check_filters(session, principal, given)
    config = dict(channel.config)
    if "url" in given:
        config["url"] = str(data.url)
        await _check_webhook_url(settings, config["url"])
    if "recipients" in given:
        config["recipients"] = given["recipients"]
    channel.config = config
    if data.secret is not None:
        channel.secret_encrypted = box.encrypt(data.secret)
    for field, value in _filters(given).items():
        setattr(channel, field, value)
    if data.name is not None:
        channel.name = data.name
    if data.enabled is not None:
        channel.enabled = data.enabled
    channel.updated_at = utcnow()
    await _flush_named(session, channel.name)
    _audit(session, principal, "notification_channel.update", channel)
    await session.commit()
    return channel


async def delete_channel(
    session: AsyncSession, principal: Principal, channel_id: uuid.UUID
) -> None:
    """Delete a channel (admins) and its deliveries; in-app notifications stay."""
    channel = await get_channel(session, principal, channel_id)
    _audit(session, principal, "notification_channel.delete", channel)
    await session.delete(channel)
    await session.commit()


async def send_test(
    session: AsyncSession, principal: Principal, wake: Wake, channel_id: uuid.UUID
) -> NotificationDelivery:
    """Stage a `notification.test` event for the channel (admins); 409 if it is disabled."""
    channel = await get_channel(session, principal, channel_id)
    if not channel.enabled:
        raise Conflict("the channel is disabled", code="CHANNEL_DISABLED")
    staged = delivery(
        channel,
        "notification.test",
        {"message": f"Test notification for channel {channel.name!r}", "alert": None},
    )
    session.add(staged)
    _audit(session, principal, "notification_channel.test", channel)
    await session.commit()
    wake()
    return staged


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    channel_id: uuid.UUID,
    *,
    status: DeliveryStatus | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[NotificationDelivery], str | None]:
    """A channel's deliveries, newest first (admins)."""
    channel = await get_channel(session, principal, channel_id)
    query = select(NotificationDelivery).where(NotificationDelivery.channel_id == channel.id)
    if status is not None:
        query = query.where(NotificationDelivery.status == status)
    query = paginate(
        query,
        sort=NotificationDelivery.created_at,
        id_column=NotificationDelivery.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def retry_delivery(
    session: AsyncSession, principal: Principal, wake: Wake, delivery_id: uuid.UUID
) -> NotificationDelivery:
    """Send a given-up delivery again with a fresh set of attempts (admins); 409 unless
    it failed."""
    principal.require(Role.ADMIN)
    found = await session.scalar(
        select(NotificationDelivery).where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.organization_id == principal.org_id,
        )
    )
    if found is None:
        raise NotFound("notification delivery not found", code="DELIVERY_NOT_FOUND")
    # Conditional: only a failed one goes back, so a delivered one is never sent again.
    retried = await session.scalar(
        update(NotificationDelivery)
        .where(
            NotificationDelivery.id == found.id,
            NotificationDelivery.status == DeliveryStatus.FAILED,
        )
        .values(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=utcnow(), updated_at=utcnow()
        )
        .returning(NotificationDelivery)
        .execution_options(populate_existing=True)
    )
    if retried is None:
        raise Conflict(
            f"only a failed delivery can be retried (this one is {found.status})",
            code="DELIVERY_NOT_FAILED",
        )
    audit.record(
        session,
        action="notification_delivery.retry",
        actor=principal,
        organization_id=retried.organization_id,
        target_type="notification_delivery",
        target_id=retried.id,
        details={"channel_id": str(retried.channel_id), "event": retried.event},
    )
    await session.commit()
    wake()
    return retried


async def list_notifications(
    session: AsyncSession,
    principal: Principal,
    *,
    unread: bool | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Notification], str | None]:
    """The organization's in-app notifications, newest first (everyone)."""
    query = select(Notification).where(Notification.organization_id == principal.org_id)
    if unread is True:
        query = query.where(Notification.read_at.is_(None))
    elif unread is False:
        query = query.where(Notification.read_at.is_not(None))
    query = paginate(
        query,
        sort=Notification.created_at,
        id_column=Notification.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def mark_read(
    session: AsyncSession, principal: Principal, notification_id: uuid.UUID
) -> Notification:
    """Mark an in-app notification read (everyone in the organization); idempotent."""
    notification = await session.scalar(
        select(Notification).where(
            Notification.id == notification_id,
            Notification.organization_id == principal.org_id,
        )
    )
    if notification is None:
        raise NotFound("notification not found", code="NOTIFICATION_NOT_FOUND")
    if notification.read_at is None:
        read_at: datetime = utcnow()
        notification.read_at = read_at
        await session.commit()
    return notification
