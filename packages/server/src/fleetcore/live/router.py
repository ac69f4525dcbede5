"""GET /api/v1/ws: live telemetry, status, commands, alerts, analytics findings and plate
reads over a WebSocket.

Authenticated by the session cookie (same-origin only) or ?token=<access token>. Client
messages: {"type": "subscribe" | "unsubscribe", "channel", "device_id"?, "keys"?}. Server
messages: "subscribed", "unsubscribed", "telemetry", "status", "command", "alert",
"finding" (channel "analytics"), "plate_read" (channel "plates"), "lagged", "error".
Everything is scoped to the caller's organization: a device of another organization is
answered like one that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import orjson
import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select

from fleetcore.auth.deps import SESSION_COOKIE, user_principal
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.errors import DomainError
from fleetcore.live import metrics
from fleetcore.live.hub import CHANNELS, LiveHub, Subscriber
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter

log = structlog.get_logger(__name__)
router = APIRouter(tags=["live"])

RECHECK_S = 60.0  # how often a long-lived socket re-checks that its session is still valid
METER_S = 60.0  # a WebSocket minute: each one started is metered as it starts
MAX_MESSAGE_BYTES = 4096
MAX_KEYS = 100
UNAUTHORIZED = 4401  # WebSocket close codes: 4000 + the HTTP status they mean


async def _authenticate(websocket: WebSocket, token: str | None) -> Principal | None:
    settings = websocket.app.state.settings
    secret = settings.secret_key.get_secret_value()
    cookie = websocket.cookies.get(SESSION_COOKIE)
    if not token and cookie:
        # A cookie is sent by the browser to any site's WebSocket: same origin only.
        origin = websocket.headers.get("origin", "")
        host = websocket.headers.get("host", "")
        if origin.split("://", 1)[-1] != host:
            return None
    credential = token or cookie
    if not credential:
        return None
    async with websocket.app.state.database.session() as session:
        try:
            return await user_principal(session, secret, credential, via_cookie=not token)
        except DomainError:
            return None


@router.websocket("/api/v1/ws")
async def live(websocket: WebSocket, token: str | None = None) -> None:
    """Subscribe to live data of your organization."""
    principal = await _authenticate(websocket, token)
    # A driver's reach is scoped to their routes; the live feed is organization-wide.
    if principal is None or principal.organization_id is None or principal.is_driver:
        await websocket.close(code=UNAUTHORIZED, reason="sign in: cookie or ?token=")
        return
    await websocket.accept()
    hub: LiveHub = websocket.app.state.live
    subscriber = Subscriber(principal.organization_id)
    sender = asyncio.create_task(_send(websocket, subscriber))
    watchdog = asyncio.create_task(_watch(websocket, token))
    minutes = asyncio.create_task(_meter(websocket.app.state.usage_meter, principal))
    metrics.CLIENTS.inc()
    try:
        while True:
            raw = await websocket.receive_text()
            for answer in await _handle(websocket, hub, subscriber, raw):
                await websocket.send_text(orjson.dumps(answer).decode())
    except WebSocketDisconnect:
        pass
    finally:
        metrics.CLIENTS.dec()
        hub.detach(subscriber)
        for task in (sender, watchdog, minutes):
            task.cancel()
        await asyncio.gather(sender, watchdog, minutes, return_exceptions=True)


async def _send(websocket: WebSocket, subscriber: Subscriber) -> None:
    sent = 0
    try:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while True:
                if sent and not subscriber.pending:  # counted once per burst, not per message
                    metrics.SENT.inc(sent)
                    sent = 0
                await websocket.send_text(await subscriber.next())
                sent += 1
    finally:
        metrics.SENT.inc(sent)


async def _meter(meter: UsageMeter, principal: Principal) -> None:
    """Meter one WebSocket minute as each starts (the first at once): a crash loses none."""
    assert principal.organization_id is not None
    while True:
        meter.count(principal.organization_id, UsageKind.WS_MINUTES)
        await asyncio.sleep(METER_S)


async def _watch(websocket: WebSocket, token: str | None) -> None:
    """Close the socket once its sign-in ends (logout, deactivation, token expiry)."""
    while True:
        await asyncio.sleep(RECHECK_S)
        if await _authenticate(websocket, token) is None:
            with contextlib.suppress(RuntimeError):
                await websocket.close(code=UNAUTHORIZED, reason="the session has ended")
            return


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


async def _handle(
    websocket: WebSocket, hub: LiveHub, subscriber: Subscriber, raw: str
) -> list[dict[str, Any]]:
    if len(raw) > MAX_MESSAGE_BYTES:
        return [_error("MESSAGE_TOO_LARGE", f"at most {MAX_MESSAGE_BYTES} bytes")]
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [_error("MALFORMED_JSON", "send a JSON object")]
    if not isinstance(request, dict):
        return [_error("INVALID_MESSAGE", "send a JSON object")]
    kind, channel = request.get("type"), request.get("channel")
    if kind not in ("subscribe", "unsubscribe"):
        return [_error("INVALID_MESSAGE", 'type is "subscribe" or "unsubscribe"')]
    if channel not in CHANNELS:
        return [_error("INVALID_CHANNEL", f"channel is one of {', '.join(CHANNELS)}")]
    device_id: uuid.UUID | None = None
    raw_device = request.get("device_id")
    if raw_device is not None:
        try:
            device_id = uuid.UUID(str(raw_device))
        except ValueError:
            return [_error("DEVICE_NOT_FOUND", "no such device")]
    keys = request.get("keys")
    if keys is not None and (
        not isinstance(keys, list)
        or not 0 < len(keys) <= MAX_KEYS
        or not all(isinstance(k, str) for k in keys)
    ):
        return [_error("INVALID_KEYS", f"keys is a list of 1 to {MAX_KEYS} key names")]
    echo = {"channel": channel, "device_id": str(device_id) if device_id else None}
    if kind == "unsubscribe":
        hub.unsubscribe(subscriber, channel, device_id)
        return [{"type": "unsubscribed", **echo}]
    if device_id is not None and not await _in_organization(websocket, subscriber, device_id):
        return [_error("DEVICE_NOT_FOUND", "no such device")]
    hub.subscribe(subscriber, channel, device_id, frozenset(keys) if keys else None)
    return [{"type": "subscribed", **echo, "keys": keys}]


async def _in_organization(
    websocket: WebSocket, subscriber: Subscriber, device_id: uuid.UUID
) -> bool:
    async with websocket.app.state.database.session() as session:
        found = await session.scalar(
            select(Device.id).where(
                Device.id == device_id,
                Device.organization_id == subscriber.organization_id,
                Device.deleted_at.is_(None),
            )
        )
    return found is not None
