"""Request bodies have a size limit on every route, enforced before anything parses them.

One limit (FLEETCORE_MAX_BODY_BYTES, 1 MiB) covers every route; a route that takes more
(file imports, batches of events) says so with `@body_limit(n)` next to its definition, and
routes that take less read their body with `read_body(request, n)`. The limit is enforced
as the body arrives, before authentication: a declared Content-Length past it is refused
without reading a byte, and a chunked body is cut off at the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcore.errors import PayloadTooLarge
from fleetcore.web.errors import envelope

_LIMIT_ATTRIBUTE = "__fleetcore_body_limit__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def body_limit(max_bytes: int) -> Callable[[Endpoint], Endpoint]:
    """Let this endpoint take bodies up to `max_bytes` (beyond the platform's default)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _LIMIT_ATTRIBUTE, max_bytes)
        return endpoint

    return mark


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


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
                limit = getattr(scope.get("endpoint"), _LIMIT_ATTRIBUTE, self.default_limit)
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
