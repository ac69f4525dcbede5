"""Where package bytes live: a MediaStore of their own (fleetcore.media.store), in parts.

A package is written as parts of PART_BYTES under ``<org>/<package>/<n>``, so an upload
never holds more than one part in memory (the store's put takes whole objects) and a range
read touches only the parts it spans. The store is apart from the media store: the media
orphan sweep deletes every key no media row names, so packages must never lie under it.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import BinaryIO

from fleetcore.config import Settings
from fleetcore.media.store import FilesystemStore, MediaStore, S3Store

PART_BYTES = 4 * 1024 * 1024


def build_ota_store(settings: Settings) -> MediaStore:
    """The filesystem under data_dir/ota, or a bucket prefix apart from the media's."""
    if settings.ota_store == "s3":
        bucket = settings.ota_s3_bucket or settings.media_s3_bucket
        if not bucket:
            raise ValueError("FLEETCORE_OTA_S3_BUCKET is required with FLEETCORE_OTA_STORE=s3")
        prefix = settings.ota_s3_prefix.strip("/")
        media_prefix = settings.media_s3_prefix.strip("/")
        if (
            settings.media_store == "s3"
            and bucket == settings.media_s3_bucket
            and (not media_prefix or f"{prefix}/".startswith(f"{media_prefix}/"))
        ):
            raise ValueError(
                "FLEETCORE_OTA_S3_PREFIX lies inside the media prefix of the same bucket: the "
                "media orphan sweep would delete packages; give media or OTA a separate prefix"
            )
        return S3Store(
            bucket,
            prefix=prefix,
            endpoint=settings.media_s3_endpoint,
            region=settings.media_s3_region,
        )
    return FilesystemStore(settings.ota_dir or settings.data_dir / "ota")


def package_prefix(organization_id: uuid.UUID, package_id: uuid.UUID) -> str:
    """The key prefix of a package's parts."""
    return f"{organization_id.hex}/{package_id.hex}"


def part_key(prefix: str, index: int) -> str:
    """The key of one part."""
    return f"{prefix}/{index:06d}"


async def write_parts(
    store: MediaStore, prefix: str, source: BinaryIO, *, part_bytes: int = PART_BYTES
) -> tuple[int, str, list[str]]:
    """Copy `source` to the store part by part, hashing as it goes: (size, sha256, keys)."""
    digest = hashlib.sha256()
    size = 0
    keys: list[str] = []
    while True:
        data = await asyncio.to_thread(source.read, part_bytes)
        if not data and keys:
            break
        digest.update(data)
        size += len(data)
        key = part_key(prefix, len(keys))
        await store.put(key, data)  # an empty package is one empty part
        keys.append(key)
        if len(data) < part_bytes:
            break
    return size, digest.hexdigest(), keys


async def read_range(
    store: MediaStore, prefix: str, part_bytes: int, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of a package, a part's slice at a time (the caller bounds it)."""
    position = start
    while position < end:
        index, offset = divmod(position, part_bytes)
        stop = min(end, (index + 1) * part_bytes)
        data = await store.get_range(part_key(prefix, index), offset, offset + stop - position)
        if not data:
            return  # a part shorter than its row says: never loop on it
        yield data
        position += len(data)


async def read_bytes(
    store: MediaStore, prefix: str, part_bytes: int, start: int, end: int
) -> bytes:
    """Bytes [start, end) joined (for small reads: a chunk)."""
    return b"".join([piece async for piece in read_range(store, prefix, part_bytes, start, end)])


async def delete_parts(store: MediaStore, keys: list[str]) -> None:
    """Delete parts; a missing one is no error."""
    for key in keys:
        await store.delete(key)
