"""Serving a stored file: validators (ETag = its sha256, If-None-Match -> 304), one byte
range (206, 416 when unsatisfiable), private caching, and headers that keep a browser from
treating an image as anything else."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from fleetcore.errors import DomainError, NotFound
from fleetcore.media.images import THUMB_TYPE
from fleetcore.media.models import Media
from fleetcore.media.store import MediaStore

CHUNK_BYTES = 1024 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


class RangeNotSatisfiable(DomainError):
    """The Range starts past the end of the file."""

    status_code = 416
    default_code = "RANGE_NOT_SATISFIABLE"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range, None to send it all (no header, several ranges
    or a malformed one, which RFC 9110 lets a server ignore); 416 when none of it exists."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - suffix), size
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None  # malformed: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"the range is outside the file ({size} bytes)",
        details={"bytes": size},
        headers={"Content-Range": f"bytes */{size}"},
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


async def _chunks(store: MediaStore, key: str, start: int, end: int) -> AsyncIterator[bytes]:
    position = start
    while position < end:
        stop = min(position + CHUNK_BYTES, end)
        yield await store.get_range(key, position, stop)
        position = stop


async def serve(
    request: Request,
    media: Media,
    store: MediaStore,
    *,
    thumbnail: bool,
    max_age_s: int,
) -> Response:
    """The file (or its thumbnail) with caching and range headers."""
    key = media.thumb_key if thumbnail else media.storage_key
    if key is None:
        raise NotFound("media not found", code="MEDIA_NOT_FOUND")
    stat = await store.stat(key)
    if stat is None:  # the row outlived its file (a store cleaned by hand): nothing to serve
        raise NotFound("media not found", code="MEDIA_NOT_FOUND")
    content_type = THUMB_TYPE if thumbnail else media.content_type
    etag = f'"{media.sha256}{"-thumb" if thumbnail else ""}"'
    name = f"{media.id}{'-thumb' if thumbnail else ''}.{_EXTENSIONS.get(content_type, 'bin')}"
    headers = {
        "ETag": etag,
        "Cache-Control": f"private, max-age={max_age_s}",
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{name}"',
        # Served under the API's origin: an image must never run as a document.
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    size = stat.size
    span = byte_range(request.headers.get("range"), size)
    start, end = span if span is not None else (0, size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(
        _chunks(store, key, start, end),
        status_code=status,
        headers=headers,
        media_type=content_type,
    )
