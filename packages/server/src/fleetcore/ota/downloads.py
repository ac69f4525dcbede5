"""Package bytes for devices (HTTP whole, ranged or in chunks; MQTT chunks) and users.

A device may download only the package its shared attributes assign it now (fw_title and
fw_version, or sw_*), of its own organization; anything else is 404, the same answer as
for a package that does not exist.
"""

from __future__ import annotations

import uuid

from fastapi import Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Database
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.errors import Invalid, NotFound
from fleetcore.media.serving import byte_range
from fleetcore.media.store import MediaStore
from fleetcore.ota import assignment
from fleetcore.ota import store as parts
from fleetcore.ota.chunk_cache import ChunkCache, Resolved
from fleetcore.ota.models import OtaPackage

MQTT_MAX_CHUNK = 64 * 1024  # under the embedded broker's and ThingsBoard's packet limits
HTTP_MAX_CHUNK = 16 * 1024 * 1024
STREAM_BYTES = 1024 * 1024


def _not_found() -> NotFound:
    return NotFound("no such package is assigned to this device", code="OTA_PACKAGE_NOT_FOUND")


async def device_package(
    session: AsyncSession,
    device_id: uuid.UUID,
    organization_id: uuid.UUID,
    kind: str,
    *,
    title: str | None = None,
    version: str | None = None,
) -> OtaPackage:
    """The package assigned to the device (matching title and version when given)."""
    package = await assignment.assigned_package(session, device_id, organization_id, kind)
    if package is None or (title is not None and title != package.title):
        raise _not_found()
    if version is not None and version != package.version:
        raise _not_found()
    return package


def chunk_span(total: int, chunk: int, size: int) -> tuple[int, int]:
    """Bytes [N*S, (N+1)*S) clipped to the file (empty past its end)."""
    start = min(total, chunk * size)
    return start, min(total, start + size)


def _headers(package: OtaPackage) -> dict[str, str]:
    return {
        "ETag": f'"{package.sha256}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'attachment; filename="{package.title}-{package.version}.bin"',
        "X-Checksum-SHA256": package.sha256,
    }


async def serve(
    request: Request,
    package: OtaPackage,
    store: MediaStore,
    *,
    chunk: int | None = None,
    size: int | None = None,
) -> Response:
    """With `size`: chunk `chunk` (0 by default). Without: the whole file, or one Range (206)."""
    headers = _headers(package)
    if size is not None:
        if not 1 <= size <= HTTP_MAX_CHUNK:
            raise Invalid(
                f"size is 1-{HTTP_MAX_CHUNK} bytes",
                code="OTA_CHUNK_INVALID",
                details={"field": "size"},
            )
        start, end = chunk_span(package.size, chunk or 0, size)
        data = await parts.read_bytes(store, package.storage_prefix, package.part_bytes, start, end)
        return Response(data, media_type="application/octet-stream", headers=headers)
    span = byte_range(request.headers.get("range"), package.size)
    start, end = span if span is not None else (0, package.size)
    headers["Content-Length"] = str(end - start)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{package.size}"
    return StreamingResponse(
        parts.read_range(store, package.storage_prefix, package.part_bytes, start, end),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


class MqttChunks:
    """The device-message layer's OtaChunks port: a chunk of the assigned package.

    The package a request id resolved to serves its later chunks (ota/chunk_cache.py).
    """

    def __init__(self, database: Database, store: MediaStore) -> None:
        self.database = database
        self.store = store
        self.cache = ChunkCache()

    async def __call__(
        self, device: IngestDevice, kind: str, request_id: str, chunk: int, size: int
    ) -> bytes | tuple[str, str]:
        """The bytes (empty past the end), or the dead letter's (reason, detail)."""
        if size > MQTT_MAX_CHUNK:
            return (
                "chunk_too_large",
                f"{size} bytes asked; chunks over MQTT are at most {MQTT_MAX_CHUNK}",
            )
        key = (device.id, kind, request_id)
        package = self.cache.get(key)
        if package is None:
            generation = self.cache.generation
            package = await self._assigned(device, kind)
            if package is None:
                return "ota_not_assigned", f"no {kind} package is assigned to this device"
            self.cache.put(key, package, generation=generation)
        start, end = chunk_span(package.size, chunk, size)
        return await parts.read_bytes(
            self.store, package.storage_prefix, package.part_bytes, start, end
        )

    async def _assigned(self, device: IngestDevice, kind: str) -> Resolved | None:
        async with self.database.session() as session:
            row = await assignment.assigned_package(
                session, device.id, device.organization_id, kind
            )
        return None if row is None else Resolved(row.storage_prefix, row.part_bytes, row.size)
