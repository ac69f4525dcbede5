"""Request bodies have a size limit on every route, enforced before anything parses them.

One limit (FLEETCORE_MAX_BODY_BYTES, 1 MiB) covers every route; a route that takes more
(file imports, batches of events) says so with `@body_limit(n)` next to its definition (the
web layer's BodyLimitMiddleware, fleetcore/web/body_limit.py, enforces it). Below that limit,
a handler caps its own body: `read_body` / `read_capped` for a whole body, `parse_form` for a
multipart body parsed as it streams. Each refuses a declared Content-Length past the cap
without reading a byte and cuts a chunked body off at the cap. No web-layer imports: domain
services (OTA packages, media) read their bodies through this module.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from fleetcore.errors import PayloadTooLarge

_LIMIT_ATTRIBUTE = "__fleetcore_body_limit__"
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def body_limit(max_bytes: int) -> Callable[[Endpoint], Endpoint]:
    """Let this endpoint take bodies up to `max_bytes` (beyond the platform's default)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _LIMIT_ATTRIBUTE, max_bytes)
        return endpoint

    return mark


def route_limit(endpoint: object, default: int) -> int:
    """The body limit `endpoint` names with @body_limit, else `default`."""
    limit: int = getattr(endpoint, _LIMIT_ATTRIBUTE, default)
    return limit


class BodyTooLarge(MultiPartException):
    """A body past its cap; `declared` is the Content-Length when that alone refused it.

    A MultiPartException so that starlette's parser, meeting it in the stream, closes the
    temporary files it has opened before passing it on.
    """

    def __init__(self, limit: int, declared: int | None = None) -> None:
        super().__init__(f"the body is larger than {limit} bytes")
        self.limit = limit
        self.declared = declared


def _refuse_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit, int(declared))


async def _capped(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        yield chunk


async def read_capped(request: Request, limit: int) -> bytes:
    """The whole body; BodyTooLarge past `limit` bytes (declared or received)."""
    _refuse_declared(request, limit)
    return b"".join([chunk async for chunk in _capped(request, limit)])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) past `limit` bytes without reading it all."""
    try:
        return await read_capped(request, limit)
    except BodyTooLarge:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes") from None


async def parse_form(
    request: Request, limit: int, *, max_files: int, max_fields: int, max_part_size: int
) -> FormData:
    """A multipart body parsed as it streams (file parts spooled to temporary files).

    Raises BodyTooLarge past `limit` bytes (declared or received) and MultiPartException
    for a malformed body; the caller names both in its own terms.
    """
    _refuse_declared(request, limit)
    parser = MultiPartParser(
        request.headers,
        _capped(request, limit),
        max_files=max_files,
        max_fields=max_fields,
        max_part_size=max_part_size,
    )
    return await parser.parse()
