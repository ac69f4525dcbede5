"""Progress as it is reported: after a device's client attributes commit, its rows in open
rollouts follow its fw_state / sw_state, and the "ota" live channel hears of it.

The job (ota/job.py) re-reads the same reports every tick, so a report whose notice was
lost (the process stopped after the commit) still counts, a tick later.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import structlog
from sqlalchemy import select

from fleetcore.attributes import signals
from fleetcore.db import Database
from fleetcore.live.hub import LiveHub
from fleetcore.ota import progress
from fleetcore.ota.models import OtaRollout

log = structlog.get_logger(__name__)

WATCHED = frozenset(
    {
        "fw_state",
        "sw_state",
        "fw_error",
        "sw_error",
        "current_fw_version",
        "current_sw_version",
    }
)


class OtaTracker:
    """A lifespan component: listens to client attribute changes while started."""

    name = "ota"

    def __init__(self, database: Database, hub: LiveHub) -> None:
        self.database = database
        self.hub = hub
        self._stop: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Hear of committed reports."""
        self._stop = signals.listen(self._changed)

    async def stop(self) -> None:
        """Stop hearing; finish the updates in flight."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _changed(self, change: signals.SharedChange) -> None:
        if change.scope != "client" or not WATCHED.intersection(change.values):
            return
        if not self.database.background_writes_allowed:
            return
        task = asyncio.get_running_loop().create_task(self.sync(change.device_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sync(self, device_id: uuid.UUID) -> None:
        """Apply the device's report to its open rollouts and publish what moved."""
        try:
            async with self.database.session(write=True) as session:
                moved = await progress.sync_devices(session, [device_id])
                await session.commit()
                progress.publish_devices(self.hub, moved)
                for rollout_id in {change.rollout_id for change in moved}:
                    rollout = await session.scalar(
                        select(OtaRollout).where(OtaRollout.id == rollout_id)
                    )
                    if rollout is not None:
                        await progress.publish_rollout(session, self.hub, rollout)
        except Exception:
            log.exception("ota_progress_failed", device_id=str(device_id))
