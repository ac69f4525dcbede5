"""The middleware that holds every request body to its route's limit (fleetcore/body_limit.py)."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcore.body_limit import route_limit
from fleetcore.errors import PayloadTooLarge
from fleetcore.web.errors import envelope


class BodyLimitMiddleware:
    """Answers 413 (the error envelope) for a body past its route's limit."""

    def __init__(self, app: ASGIApp, *, default_limit: int) -> None:
        self.app = app
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0
        limit: int | None = None
        refused = response_started = False

        async def limited_receive() -> Message:
            nonlocal received, limit, refused
            if limit is None:
                # Routing has happened by the first read: the endpoint names its own limit.
                limit = route_limit(scope.get("endpoint"), self.default_limit)
                if _declared_length(scope) > limit:
                    return await refuse()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    return await refuse()
            return message

        async def refuse() -> Message:
            nonlocal refused
            if not refused and not response_started:
                refused = True
                await _send_too_large(send, limit or self.default_limit)
            # The endpoint sees a client that went away; nothing it does next is sent.
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The body was refused and answered; the endpoint's failure to read it is expected.


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


async def _send_too_large(send: Send, limit: int) -> None:
    error = PayloadTooLarge(f"the body is larger than {limit} bytes")
    body = orjson.dumps(envelope(error.code, error.message, {"max_bytes": limit}))
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
