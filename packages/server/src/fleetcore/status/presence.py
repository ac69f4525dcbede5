"""Device presence: one source of truth for online/offline, every transition recorded.

Inputs, all in this process: MQTT connects and disconnects (device_messages' listener calls),
traffic (a message accepted over MQTT or HTTP, noted synchronously when it arrives — never
after its commit, so a message committed after a disconnect cannot bring the device back
online), and a periodic sweep that turns devices silent for longer than their profile's
`offline_timeout_s` offline unless they hold an MQTT connection here.

Transitions go through one ordered queue: the writer applies each with a conditional UPDATE
(only if the stored state differs), appends the history row in the same transaction, and
then pushes {"type": "status", ...} live. Repeated signals for the same state write nothing,
so there is no flapping. `last_seen_at` is written in batches by the sweep, not per message.
With several API processes each tracks the connections it holds; the sweep never marks
offline a device that is connected to this process.

Beside other processes (`shared`, any role but all) the sweep's two halves run apart:
`flush_seen` in each process that takes traffic (its own memory), the offline check once per
tick in a worker (`check_offline`), which holds no connection. So that the worker judges on
storage alone, a process holding MQTT connections writes them as seen at each flush, and a
device another process marked offline while this one still thought it online is turned
online again at the flush after its next message.

With several processes (FLEETCORE_REDIS_URL) a `PresenceShare` makes the in-memory parts
agree: each process's connection counts are visible to the others (a device connected to
worker A is not swept offline, nor taken offline by a disconnect, on worker B), and each
committed transition is announced so every process's view (`is_online`, the skip of
repeated signals) follows the database, not only what it saw itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, cast

import structlog
from sqlalchemy import Table, and_, bindparam, select, update

from fleetcore.db import Database, utcnow
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.devices.models import CREDENTIALS_UNCHANGED, Device, DeviceProfile
from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore.status.models import DeviceStatusChange

log = structlog.get_logger(__name__)

DEFAULT_OFFLINE_TIMEOUT_S = 600


@dataclass(frozen=True, slots=True)
class _Change:
    device_id: uuid.UUID
    organization_id: uuid.UUID
    status: str
    reason: str
    at: datetime


class PresenceShare(Protocol):
    """What several processes share of presence (the database holds the state itself).

    - `held(device, count)`: this process now holds `count` MQTT connections of the device
      (0: none). Never waits; other processes see it shortly after, and stop seeing it when
      this process is gone (its entries expire with it).
    - `held_elsewhere(devices)`: which of them another live process holds a connection of.
      Bounded in time; when it cannot tell (Redis down) it answers the empty set, so the
      caller decides on its own knowledge, as a single process does.
    - `announce(device, status)`: a transition this process committed. Every other process
      calls its `on_announced(device, status)` with it.
    """

    on_announced: Callable[[uuid.UUID, str], None] | None

    def held(self, device_id: uuid.UUID, count: int) -> None: ...

    async def held_elsewhere(self, device_ids: Collection[uuid.UUID]) -> set[uuid.UUID]: ...

    def announce(self, device_id: uuid.UUID, status: str) -> None: ...


class Presence:
    """Online/offline of every device; a lifespan component with a sweep job."""

    name = "presence"

    def __init__(
        self,
        database: Database,
        hub: LiveHub,
        *,
        shared: bool = False,
        share: PresenceShare | None = None,
    ) -> None:
        self.database = database
        self.hub = hub
        self.shared = shared
        self.share = share
        if share is not None:
            share.on_announced = self._announced
        self._connections: Counter[uuid.UUID] = Counter()
        self._state: dict[uuid.UUID, str] = {}  # what was last written (or read)
        self._seen: dict[uuid.UUID, float] = {}  # wall-clock seconds, not yet written
        self._queue: asyncio.Queue[_Change | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the transition writer (shared: learn who is online from the database)."""
        if self.share is not None and self.database.background_writes_allowed:
            async with self.database.session() as session:
                online = await session.scalars(
                    select(Device.id).where(
                        Device.connectivity == "online", Device.deleted_at.is_(None)
                    )
                )
                self._state.update(dict.fromkeys(online, "online"))
        self._task = asyncio.create_task(self._run(), name="presence-writer")

    async def stop(self) -> None:
        """Write every transition already noted, and the pending last-seen times."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        await self.flush_seen()

    # -- signals ------------------------------------------------------------------------

    def is_online(self, device_id: uuid.UUID) -> bool:
        """Whether the device is online (connected here, or recently heard from)."""
        return self._connections[device_id] > 0 or self._state.get(device_id) == "online"

    def connections(self, device_id: uuid.UUID) -> int:
        """The device's MQTT connections to this process."""
        return self._connections.get(device_id, 0)

    def seen(self, device: IngestDevice) -> None:
        """A message from the device arrived (call as it arrives, not after storing it)."""
        self._seen[device.id] = time.time()
        if self._state.get(device.id) != "online":
            self._note(device, "online", "traffic")

    async def device_connected(self, device: IngestDevice) -> None:
        """An MQTT connection of the device was accepted."""
        self._connections[device.id] += 1
        if self.share is not None:
            self.share.held(device.id, self._connections[device.id])
        self._seen[device.id] = time.time()
        self._note(device, "online", "connect")

    async def device_disconnected(self, device: IngestDevice, *, abnormal: bool) -> None:
        """An MQTT connection of the device ended (abnormal: the will fired)."""
        self._connections[device.id] -= 1
        if self._connections[device.id] <= 0:
            del self._connections[device.id]
            if self.share is not None:
                self.share.held(device.id, 0)
                if device.id in await self.share.held_elsewhere([device.id]):
                    return  # it reconnected to another process: still online
            self._note(device, "offline", "will" if abnormal else "disconnect")
        elif self.share is not None:
            self.share.held(device.id, self._connections[device.id])

    async def device_subscribed(self, device: IngestDevice, topic_filter: str) -> None:
        """Subscriptions do not change presence."""

    def reported(self, device: IngestDevice, status: str) -> None:
        """The device's own status message (birth or last will) on an external broker, where
        no connection hook exists: "online" or "offline"; anything else changes nothing."""
        if status in ("online", "offline") and self._state.get(device.id) != status:
            self._note(device, status, "status")

    def _announced(self, device_id: uuid.UUID, status: str) -> None:
        """Another process committed a transition: this process's view follows."""
        self._state[device_id] = status

    def _note(self, device: IngestDevice, status: str, reason: str) -> None:
        self._state[device.id] = status
        self._queue.put_nowait(_Change(device.id, device.organization_id, status, reason, utcnow()))

    # -- writing ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            change = await self._queue.get()
            if change is None:
                return
            try:
                await self._apply(change)
            except Exception:
                log.exception("presence_write_failed", device_id=str(change.device_id))

    async def _apply(self, change: _Change) -> None:
        if not self.database.background_writes_allowed:
            return
        async with self.database.session() as session:
            values: dict[str, object] = {
                "connectivity": change.status,
                "connectivity_changed_at": change.at,
                "updated_at": Device.updated_at,  # presence is not an edit of the device
            }
            if change.status == "online":
                values["last_seen_at"] = change.at
            result = await session.execute(
                update(Device)
                .where(Device.id == change.device_id, Device.connectivity != change.status)
                .values(**values)
                .execution_options(synchronize_session=False, **{CREDENTIALS_UNCHANGED: True})
            )
            if not getattr(result, "rowcount", 0):
                await session.rollback()
                return  # already in that state: nothing to record
            session.add(
                DeviceStatusChange(
                    organization_id=change.organization_id,
                    device_id=change.device_id,
                    status=change.status,
                    reason=change.reason,
                    at=change.at,
                )
            )
            await session.commit()
        if self.share is not None:
            self.share.announce(change.device_id, change.status)
        self.hub.publish(
            LiveEvent(
                change.organization_id,
                "status",
                change.device_id,
                {
                    "type": "status",
                    "device_id": str(change.device_id),
                    "status": change.status,
                    "reason": change.reason,
                    "at": change.at.isoformat(),
                },
            )
        )

    # -- the sweep ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Write last-seen times; mark silent devices offline. Returns how many went offline."""
        await self.flush_seen()
        return await self.check_offline()

    async def check_offline(self) -> int:
        """Mark devices silent past their profile's timeout offline; how many went offline."""
        now = utcnow()
        async with self.database.session() as session:
            rows = (
                await session.execute(
                    select(
                        Device.id,
                        Device.organization_id,
                        Device.last_seen_at,
                        DeviceProfile.offline_timeout_s,
                    )
                    .outerjoin(DeviceProfile, DeviceProfile.id == Device.profile_id)
                    .where(and_(Device.connectivity == "online", Device.deleted_at.is_(None)))
                )
            ).all()
        silent = []
        for device_id, organization_id, last_seen, timeout_s in rows:
            timeout = timedelta(seconds=timeout_s or DEFAULT_OFFLINE_TIMEOUT_S)
            if self._connections[device_id] > 0 or (last_seen and now - last_seen < timeout):
                continue
            silent.append((device_id, organization_id))
        elsewhere: set[uuid.UUID] = set()
        if silent and self.share is not None:
            elsewhere = await self.share.held_elsewhere([device for device, _ in silent])
        gone = 0
        for device_id, organization_id in silent:
            if device_id in elsewhere:
                continue  # connected to another process, silent or not
            self._state[device_id] = "offline"
            self._queue.put_nowait(_Change(device_id, organization_id, "offline", "timeout", now))
            gone += 1
        return gone

    async def flush_seen(self) -> None:
        """Write the last-seen times noted here (beside other processes: see the docstring)."""
        if self.shared:
            now = time.time()
            for device_id in self._connections:
                self._seen[device_id] = now
        if not self._seen or not self.database.background_writes_allowed:
            self._seen.clear()
            return
        seen, self._seen = self._seen, {}
        rows = [{"b_id": d, "b_seen": datetime.fromtimestamp(at, UTC)} for d, at in seen.items()]
        table = cast(Table, Device.__table__)
        statement = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(last_seen_at=bindparam("b_seen"), updated_at=table.c.updated_at)
        )
        async with self.database.session() as session:
            await session.execute(statement, rows)  # one executemany
            await session.commit()
        if self.shared:
            await self._heal(list(seen))

    async def _heal(self, heard: list[uuid.UUID]) -> None:
        """Devices heard here that storage says are offline (another process's sweep)."""
        for start in range(0, len(heard), 5000):
            async with self.database.session() as session:
                rows = (
                    await session.execute(
                        select(Device.id, Device.organization_id).where(
                            Device.id.in_(heard[start : start + 5000]),
                            Device.connectivity != "online",
                            Device.deleted_at.is_(None),
                        )
                    )
                ).all()
            for device_id, organization_id in rows:
                self._state[device_id] = "online"
                self._queue.put_nowait(
                    _Change(device_id, organization_id, "online", "traffic", utcnow())
                )
