"""Desired configuration, live: long-poll waiters and desired-versus-reported pushes.

After every committed change of a device's shared (desired) or client (reported)
attributes: HTTP long-pollers of that device wake up, and the organization's "status"
subscribers get {"type": "config", "device_id", "desired_version", "differs": [keys],
"in_sync"} so a dashboard shows at once whether the device applied its configuration.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog

from fleetcore.attributes import service, signals
from fleetcore.attributes.schemas import AttributeScope, canonical_json
from fleetcore.db import Database
from fleetcore.devices.models import Device
from fleetcore.live.hub import LiveEvent, LiveHub

log = structlog.get_logger(__name__)

MAX_WAIT_S = 60.0


class DesiredState:
    """A lifespan component: listens to attribute changes while started."""

    name = "desired-state"

    def __init__(self, database: Database, hub: LiveHub) -> None:
        self.database = database
        self.hub = hub
        self._waiters: defaultdict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)
        self._stop: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Hear of committed changes."""
        self._stop = signals.listen(self._changed)

    async def stop(self) -> None:
        """Stop hearing; wake every waiter; finish pushes in flight."""
        if self._stop is not None:
            self._stop()
            self._stop = None
        for events in self._waiters.values():
            for event in events:
                event.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _changed(self, change: signals.SharedChange) -> None:
        if change.scope == "shared":
            for event in self._waiters.get(change.device_id, ()):
                event.set()
        task = asyncio.get_running_loop().create_task(self._push(change.device_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_for_change(
        self, device_id: uuid.UUID, after_version: int, timeout_s: float
    ) -> dict[str, Any] | None:
        """The desired state once its version passes `after_version`, or None on timeout."""
        event = asyncio.Event()
        self._waiters[device_id].add(event)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(timeout_s, MAX_WAIT_S)
            while True:
                # Cleared before the read: a change during the read leaves it set, so the
                # wait below returns at once and reads again (no lost wake-up).
                event.clear()
                desired = await self._desired(device_id)
                if desired["shared_version"] > after_version:
                    return desired
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return None
        finally:
            waiters = self._waiters[device_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[device_id]

    async def _desired(self, device_id: uuid.UUID) -> dict[str, Any]:
        async with self.database.session() as session:
            return await service.desired_state(session, device_id)

    async def _push(self, device_id: uuid.UUID) -> None:
        if not self.hub.listening("status") or not self.database.background_writes_allowed:
            return
        try:
            async with self.database.session() as session:
                organization_id = await session.scalar(
                    Device.__table__.select()
                    .with_only_columns(Device.organization_id)
                    .where(Device.id == device_id)
                )
                if organization_id is None or not self.hub.wanted(organization_id, "status"):
                    return
                desired = await service.desired_state(session, device_id)  # version first
                client = await service.device_values(session, device_id, AttributeScope.CLIENT)
        except Exception:
            log.exception("desired_state_push_failed", device_id=str(device_id))
            return
        shared, version = desired["shared"], desired["shared_version"]
        differs = sorted(
            key
            for key, value in shared.items()
            if key not in client or canonical_json(client[key]) != canonical_json(value)
        )
        self.hub.publish(
            LiveEvent(
                organization_id,
                "status",
                device_id,
                {
                    "type": "config",
                    "device_id": str(device_id),
                    "desired_version": version,
                    "differs": differs,
                    "in_sync": not differs,
                },
            )
        )
