"""Where media bytes live: the MediaStore port, a filesystem store and an S3-compatible one.

The contract, the same for every store (tests/test_media_store.py runs it against both):

- Keys are made by the server (``<org>/<device>/<media id>...``): segments of ``[A-Za-z0-9._=-]``
  joined by ``/``, no empty, ``.`` or ``..`` segment. A store refuses any other key
  (``ValueError``) so no key can reach outside its root, whoever built it.
- ``put(key, data)`` is atomic: a reader sees the old object, nothing, or all of the new bytes,
  never part of them. Putting an existing key replaces it.
- ``get_range(key, start, end)`` returns bytes ``[start, end)``; the caller keeps the range
  inside the object (``stat`` first). A missing key raises ``KeyError``.
- ``stat(key)`` returns the size and modification time, or None when there is no such object.
- ``delete(key)`` is idempotent: deleting a missing key is no error.
- ``keys(prefix)`` iterates (key, stat) of every object under a prefix ("" for all), in no
  particular order; the orphan sweep compares them with the media rows.

Stores never log credentials (S3 reads them from the standard AWS environment variables).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleetcore.config import Settings

if TYPE_CHECKING:
    from obstore.store import S3Store as ObstoreS3Store

# "=" for archives' Hive-style partitions (org=<uuid>/day=<date>): a plain character on a
# filesystem and in S3, it cannot reach outside the root.
_SEGMENT = re.compile(r"[A-Za-z0-9._=-]{1,128}")
_TMP_DIR = ".tmp"  # the filesystem store's half-written files, never listed


def check_key(key: str) -> str:
    """The key unchanged, or ValueError when it could name anything but an object here."""
    parts = key.split("/")
    if (
        len(key) > 512
        or not parts
        or any(p in (".", "..") or not _SEGMENT.fullmatch(p) for p in parts)
        or parts[0] == _TMP_DIR
    ):
        raise ValueError("not a media key")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix: "" or a key, optionally ending with "/"."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """An object's size and last modification."""

    size: int
    modified: datetime


class MediaStore(Protocol):
    """Bytes by key; see the module docstring for the contract."""

    name: str

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` at `key` atomically."""
        ...

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object (KeyError when missing)."""
        ...

    async def stat(self, key: str) -> ObjectStat | None:
        """Size and modification time, or None."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is no error."""
        ...

    def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, ObjectStat]]:
        """Every object under `prefix`."""
        ...


class FilesystemStore:
    """Files under a root directory; writes go to a temporary file renamed into place."""

    name = "file"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # check_key already refuses "..": this guards against a symlink planted in the tree.
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError("not a media key")
        return path

    async def put(self, key: str, data: bytes) -> None:
        """Write to .tmp/, fsync, then rename over the key (atomic on one filesystem)."""
        path = self._path(key)
        await asyncio.to_thread(self._put, path, data)

    def _put(self, path: Path, data: bytes) -> None:
        tmp_dir = self.root / _TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_dir / f"{secrets.token_hex(8)}.part"
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            for attempt in range(3):
                try:
                    os.replace(tmp, path)
                    break
                except FileNotFoundError:
                    # A delete pruned the directory, emptied a moment ago, since our mkdir.
                    if attempt == 2:
                        raise
                    path.parent.mkdir(parents=True, exist_ok=True)
        finally:
            tmp.unlink(missing_ok=True)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Read [start, end) of the file."""
        path = self._path(key)
        return await asyncio.to_thread(self._read, path, start, end)

    @staticmethod
    def _read(path: Path, start: int, end: int) -> bytes:
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read(max(0, end - start))
        except FileNotFoundError:
            raise KeyError(path.name) from None

    async def stat(self, key: str) -> ObjectStat | None:
        """The file's size and mtime."""
        path = self._path(key)
        return await asyncio.to_thread(self._stat, path)

    @staticmethod
    def _stat(path: Path) -> ObjectStat | None:
        try:
            info = path.stat()
        except FileNotFoundError:
            return None
        return ObjectStat(info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    async def delete(self, key: str) -> None:
        """Unlink the file, if there, and the directories it leaves empty (as S3's prefixes
        vanish with their last object: a store of many short-lived keys, such as the
        archives' staging area, would otherwise fill with empty directories)."""
        path = self._path(key)
        await asyncio.to_thread(self._delete, path)

    def _delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:  # not empty (or gone): the pruning stops here
                return
            parent = parent.parent

    async def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, ObjectStat]]:
        """Walk the tree under the prefix's directory, skipping half-written files."""
        check_prefix(prefix)
        found = await asyncio.to_thread(self._walk, prefix)
        for item in found:
            yield item

    def _walk(self, prefix: str) -> list[tuple[str, ObjectStat]]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        found: list[tuple[str, ObjectStat]] = []
        if not base.is_dir():
            return found
        for directory, subdirs, names in os.walk(base):
            if Path(directory) == self.root:
                subdirs[:] = [d for d in subdirs if d != _TMP_DIR]
            for name in names:
                path = Path(directory) / name
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix):
                    continue
                stat = self._stat(path)
                if stat is not None:
                    found.append((key, stat))
        return found


class S3Store:
    """An S3-compatible bucket through obstore (the optional extra `s3`).

    Credentials come from the standard AWS environment variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, ...), read by obstore; nothing here logs them.
    """

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint: str | None = None,
        region: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        from obstore.store import S3Store as ObstoreS3Store

        options: dict[str, Any] = dict(config or {})
        if endpoint:
            options["endpoint"] = endpoint
            # A local S3-compatible server (MinIO, moto) is often plain HTTP.
            client = {"allow_http": endpoint.startswith("http://")}
        else:
            client = {}
        if region:
            options["region"] = region
        self.prefix = prefix.strip("/")
        self._store: ObstoreS3Store = ObstoreS3Store(
            bucket,
            prefix=self.prefix or None,
            client_options=client,  # type: ignore[arg-type]
            **options,
        )

    async def put(self, key: str, data: bytes) -> None:
        """A single PUT (S3 objects appear whole or not at all)."""
        import obstore

        await obstore.put_async(self._store, check_key(key), data, use_multipart=False)

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """A ranged GET."""
        import obstore
        from obstore.exceptions import NotFoundError

        if end <= start:
            return b""
        try:
            data = await obstore.get_range_async(self._store, check_key(key), start=start, end=end)
        except (NotFoundError, FileNotFoundError):
            raise KeyError(key) from None
        return bytes(data)

    async def stat(self, key: str) -> ObjectStat | None:
        """A HEAD request."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            meta = await obstore.head_async(self._store, check_key(key))
        except (NotFoundError, FileNotFoundError):
            return None
        return ObjectStat(int(meta["size"]), meta["last_modified"])

    async def delete(self, key: str) -> None:
        """A DELETE (S3 answers success for a missing key too)."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            await obstore.delete_async(self._store, check_key(key))
        except (NotFoundError, FileNotFoundError):
            return

    async def keys(self, prefix: str = "") -> AsyncIterator[tuple[str, ObjectStat]]:
        """LIST pages of up to 1000 keys."""
        import obstore

        check_prefix(prefix)
        stream = obstore.list(self._store, prefix or None, chunk_size=1000)
        async for chunk in stream:
            for meta in chunk:
                key = str(meta["path"])
                if key.startswith(prefix):
                    yield key, ObjectStat(int(meta["size"]), meta["last_modified"])


def build_store(settings: Settings) -> MediaStore:
    """The store the settings name: the filesystem under the data directory, or S3."""
    if settings.media_store == "s3":
        if not settings.media_s3_bucket:
            raise ValueError("FLEETCORE_MEDIA_S3_BUCKET is required with FLEETCORE_MEDIA_STORE=s3")
        return S3Store(
            settings.media_s3_bucket,
            prefix=settings.media_s3_prefix,
            endpoint=settings.media_s3_endpoint,
            region=settings.media_s3_region,
        )
    return FilesystemStore(settings.media_dir or settings.data_dir / "media")
