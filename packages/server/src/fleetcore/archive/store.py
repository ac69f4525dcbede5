"""Where archives go: the media store port (filesystem or S3-compatible), configured apart.

Archives reuse fleetcore.media.store's two stores and their contract (atomic puts, keys of
safe segments); only the settings differ (FLEETCORE_ARCHIVE_*), so media and archives can
live in different places. The port has no rename, so a staged file is moved by copy and
delete: parts are bounded (archive_rows_per_file), so that costs a few megabytes a move.
"""

from __future__ import annotations

from fleetcore.config import Settings
from fleetcore.media.store import FilesystemStore, MediaStore, S3Store


def build_archive_store(settings: Settings) -> MediaStore:
    """The store the settings name: the filesystem under the data directory, or S3."""
    if settings.archive_store == "s3":
        if not settings.archive_s3_bucket:
            raise ValueError(
                "FLEETCORE_ARCHIVE_S3_BUCKET is required with FLEETCORE_ARCHIVE_STORE=s3"
            )
        return S3Store(
            settings.archive_s3_bucket,
            prefix=settings.archive_s3_prefix,
            endpoint=settings.archive_s3_endpoint,
            region=settings.archive_s3_region,
        )
    return FilesystemStore(settings.archive_dir or settings.data_dir / "archive")


async def read_all(store: MediaStore, key: str) -> bytes:
    """The whole object (KeyError when missing)."""
    stat = await store.stat(key)
    if stat is None:
        raise KeyError(key)
    return await store.get_range(key, 0, stat.size)


async def move(store: MediaStore, source: str, target: str) -> None:
    """Replace `target` with `source`'s bytes (atomically, by the port's put), then drop it."""
    await store.put(target, await read_all(store, source))
    await store.delete(source)
