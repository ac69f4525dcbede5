"""Readiness of the disks Fleetcore writes to: SQLite's data directory, and the media and
archive directories when they are on the filesystem (not S3).

Under `ready_disk_warn_percent` free the check warns (the process stays ready: /ready says
`warn` and the free percentage, for monitoring to page someone); under
`ready_disk_min_percent` it fails, so a load balancer stops sending writes to a process
that is about to refuse them (SQLite fails every write on a full disk). One check per
filesystem: directories that share one are reported once, under the first name.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from fleetcore.config import Settings
from fleetcore.ops.readiness import Check, NotReady, Warn


def directories(settings: Settings) -> dict[str, Path]:
    """The directories to watch, by check name."""
    found: dict[str, Path] = {}
    database = settings.resolved_database_url.database
    if settings.is_sqlite and database and database != ":memory:":
        found["disk.data"] = Path(database).parent
    if settings.media_store == "file":
        found["disk.media"] = settings.media_dir or settings.data_dir / "media"
    if settings.archive_enabled and settings.archive_store == "file":
        found["disk.archive"] = settings.archive_dir or settings.data_dir / "archive"
    return found


def _existing(path: Path) -> Path:
    """The directory itself, or its nearest existing parent (created on first write)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_percent(path: Path) -> float:
    """Free space of the filesystem holding `path`, for unprivileged writers, in percent."""
    usage = shutil.disk_usage(_existing(path))
    return 100.0 * usage.free / usage.total if usage.total else 0.0


def disk_check(path: Path, *, warn_percent: float, min_percent: float) -> Check:
    """A readiness check of the filesystem holding `path`."""

    async def check() -> None:
        # statvfs in a thread: a hung network filesystem must not stall the event loop.
        percent = await asyncio.to_thread(free_percent, path)
        if percent < min_percent:
            raise NotReady(f"{percent:.1f}% free, under the floor of {min_percent:g}%")
        if percent < warn_percent:
            raise Warn(f"{percent:.1f}% free")

    return check


def disk_checks(settings: Settings) -> dict[str, Check]:
    """One check per filesystem among `directories(settings)`."""
    checks: dict[str, Check] = {}
    seen: set[int] = set()
    for name, path in directories(settings).items():
        device = os.stat(_existing(path)).st_dev
        if device in seen:
            continue
        seen.add(device)
        checks[name] = disk_check(
            path,
            warn_percent=settings.ready_disk_warn_percent,
            min_percent=settings.ready_disk_min_percent,
        )
    return checks
