"""Notifications API: channels and their deliveries (admins), in-app notifications (all)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.notifications import service
from fleetcore.notifications.dispatcher import Dispatcher
from fleetcore.notifications.models import DeliveryStatus
from fleetcore.notifications.schemas import (
    ChannelIn,
    ChannelOut,
    ChannelPatch,
    DeliveryOut,
    NotificationOut,
)
from fleetcore.pagination import CursorQuery, LimitQuery, Page

router = APIRouter(prefix="/api/v1", tags=["notifications"])


def _dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.notifications
    return dispatcher


DispatcherDep = Annotated[Dispatcher, Depends(_dispatcher)]


@router.post(
    "/notification-channels",
    status_code=status.HTTP_201_CREATED,
    summary="Create a notification channel",
)
async def create_channel(
    data: ChannelIn,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
) -> ChannelOut:
    """Admins. Without filters it receives every alert event of the organization."""
    channel = await service.create_channel(session, principal, settings, dispatcher.box, data)
    return service.channel_out(channel)


@router.get("/notification-channels", summary="List notification channels")
async def list_channels(
    session: SessionDep,
    principal: PrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[ChannelOut]:
    """Admins. By name."""
    rows, next_cursor = await service.list_channels(session, principal, cursor=cursor, limit=limit)
    return Page(items=[service.channel_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/notification-channels/{channel_id:uuid}", summary="A notification channel")
async def get_channel(
    channel_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ChannelOut:
    """Admins. The secret is never shown (`has_secret` says whether there is one)."""
    return service.channel_out(await service.get_channel(session, principal, channel_id))


@router.patch(
    "/notification-channels/{channel_id:uuid}",
    summary="Change a notification channel",
)
async def update_channel(
    channel_id: uuid.UUID,
    data: ChannelPatch,
    session: SessionDep,
    principal: PrincipalDep,
    dispatcher: DispatcherDep,
) -> ChannelOut:
    """Admins. A disabled channel is not given new events; its pending ones wait."""
    channel = await service.update_channel(
        session, principal, dispatcher.settings, dispatcher.box, channel_id, data
    )
    return service.channel_out(channel)


@router.delete(
    "/notification-channels/{channel_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a notification channel",
)
async def delete_channel(
    channel_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Admins. Its deliveries go with it; in-app notifications stay."""
    await service.delete_channel(session, principal, channel_id)


@router.post(
    "/notification-channels/{channel_id:uuid}/test",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a test event",
)
async def test_channel(
    channel_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, dispatcher: DispatcherDep
) -> DeliveryOut:
    """Admins. A `notification.test` event through the outbox; the delivery to follow."""
    staged = await service.send_test(session, principal, dispatcher.wake, channel_id)
    return DeliveryOut.model_validate(staged)


@router.get(
    "/notification-channels/{channel_id:uuid}/deliveries",
    summary="A channel's deliveries",
)
async def list_deliveries(
    channel_id: uuid.UUID,
    session: SessionDep,
    principal: PrincipalDep,
    status: DeliveryStatus | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[DeliveryOut]:
    """Admins. Newest first, with attempts and the last error."""
    rows, next_cursor = await service.list_deliveries(
        session, principal, channel_id, status=status, cursor=cursor, limit=limit
    )
    return Page(items=[DeliveryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/notification-deliveries/{delivery_id:uuid}/retry",
    summary="Retry a failed delivery",
)
async def retry_delivery(
    delivery_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, dispatcher: DispatcherDep
) -> DeliveryOut:
    """Admins. Only a delivery that was given up (409 otherwise)."""
    retried = await service.retry_delivery(session, principal, dispatcher.wake, delivery_id)
    return DeliveryOut.model_validate(retried)


@router.get("/notifications", summary="List in-app notifications")
async def list_notifications(
    session: SessionDep,
    principal: PrincipalDep,
    unread: bool | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[NotificationOut]:
    """Everyone in the organization. Newest first; `unread=true` for the unread ones."""
    rows, next_cursor = await service.list_notifications(
        session, principal, unread=unread, cursor=cursor, limit=limit
    )
    return Page(items=[NotificationOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post(
    "/notifications/{notification_id:uuid}/read",
    summary="Mark an in-app notification read",
)
async def mark_read(
    notification_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> NotificationOut:
    """Everyone in the organization; read for the whole organization. Idempotent."""
    notification = await service.mark_read(session, principal, notification_id)
    return NotificationOut.model_validate(notification)
