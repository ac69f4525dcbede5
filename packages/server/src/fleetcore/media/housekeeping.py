"""The media housekeeping job: retention per organization, media of deleted devices, expired
uploads, and files no row knows (orphans).

Rows go first, in chunks of one short transaction each, then their files: a crash in between
leaves orphan files, which the orphan sweep removes once they are an hour old (no request
holds a file that long before its row commits).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, delete, or_, select

from fleetcore.config import Settings
from fleetcore.db import Database, utcnow
from fleetcore.devices.models import Device
from fleetcore.jobs import JobScheduler
from fleetcore.media.metrics import DELETED
from fleetcore.media.models import Media, MediaPolicy
from fleetcore.media.service import delete_files
from fleetcore.media.store import MediaStore

log = structlog.get_logger(__name__)

JOB_NAME = "media.housekeeping"
CHUNK_ROWS = 500
ORPHAN_AGE = timedelta(hours=1)
ORPHAN_BATCH = 500


@dataclass(slots=True)
class Report:
    """Media rows removed by cause, and orphan files removed."""

    removed: dict[str, int] = field(default_factory=dict)
    orphans: int = 0


async def _delete_where(
    database: Database, store: MediaStore, condition: ColumnElement[bool], cause: str
) -> int:
    total = 0
    while True:
        async with database.session(write=True) as session:
            rows = (
                await session.execute(
                    select(Media.id, Media.storage_key, Media.thumb_key)
                    .where(condition)
                    .order_by(Media.created_at, Media.id)
                    .limit(CHUNK_ROWS)
                )
            ).all()
            if not rows:
                return total
            ids = [row[0] for row in rows]
            await session.execute(
                delete(Media).where(Media.id.in_(ids)),
                execution_options={"synchronize_session": False},
            )
            await session.commit()
        await delete_files(store, [key for row in rows for key in row[1:] if key])
        total += len(rows)
        DELETED.labels(cause).inc(len(rows))
        if len(rows) < CHUNK_ROWS:
            return total


async def _retention(
    database: Database, store: MediaStore, default_days: int, now: datetime
) -> int:
    async with database.session() as session:
        policies: Sequence[tuple[uuid.UUID, int]] = (
            await session.execute(select(MediaPolicy.organization_id, MediaPolicy.retention_days))
        ).all()
    removed = 0
    for org_id, days in policies:
        if days:
            removed += await _delete_where(
                database,
                store,
                (Media.organization_id == org_id) & (Media.created_at < now - timedelta(days=days)),
                "retention",
            )
    if default_days:
        own = [org_id for org_id, _ in policies]
        condition = Media.created_at < now - timedelta(days=default_days)
        if own:
            condition = condition & Media.organization_id.not_in(own)
        removed += await _delete_where(database, store, condition, "retention")
    return removed


async def sweep_orphans(database: Database, store: MediaStore, *, now: datetime) -> int:
    """Delete files older than an hour that no media row names."""
    removed = 0
    batch: list[str] = []

    async def flush() -> int:
        async with database.session() as session:
            known = set(
                (
                    await session.scalars(
                        select(Media.storage_key).where(Media.storage_key.in_(batch))
                    )
                ).all()
            ) | set(
                (
                    await session.scalars(select(Media.thumb_key).where(Media.thumb_key.in_(batch)))
                ).all()
            )
        orphans = [key for key in batch if key not in known]
        await delete_files(store, orphans)
        batch.clear()
        return len(orphans)

    async for key, stat in store.keys(""):
        if stat.modified < now - ORPHAN_AGE:
            batch.append(key)
            if len(batch) >= ORPHAN_BATCH:
                removed += await flush()
    if batch:
        removed += await flush()
    DELETED.labels("orphan").inc(removed)
    return removed


async def run(
    database: Database, store: MediaStore, settings: Settings, *, now: datetime | None = None
) -> Report:
    """One housekeeping pass."""
    now = now or utcnow()
    report = Report()
    report.removed["retention"] = await _retention(
        database, store, settings.media_retention_days, now
    )
    deleted_devices = select(Device.id).where(Device.deleted_at.is_not(None))
    report.removed["device"] = await _delete_where(
        database, store, Media.device_id.in_(deleted_devices), "device"
    )
    # Pending uploads never sent, uploads no event named in time, and media whose event is
    # gone (the foreign key set event_id to NULL).
    report.removed["expired"] = await _delete_where(
        database,
        store,
        Media.event_id.is_(None) & or_(Media.expires_at < now, Media.attached_at.is_not(None)),
        "expired",
    )
    report.orphans = await sweep_orphans(database, store, now=now)
    if report.orphans or any(report.removed.values()):
        log.info("media_housekeeping", removed=report.removed, orphans=report.orphans)
    return report


def register_job(
    jobs: JobScheduler, database: Database, store: MediaStore, settings: Settings
) -> None:
    """Run housekeeping every `media_housekeeping_interval_s` (worker role)."""

    async def housekeeping() -> None:
        await run(database, store, settings)

    jobs.register(JOB_NAME, settings.media_housekeeping_interval_s, housekeeping)
