"""The usage meter: in-memory counters on the hot path, flushed to the database periodically.

Counting is a dict increment keyed by (organization, UTC day, kind, transport): no await, no
lock, no I/O (call it from the event loop's thread, as every caller does). A flush (the
`usage.flush` job every `usage_flush_interval_s`, 10 s, and once more when the process stops)
swaps the dict for an empty one *before* writing, then adds the swapped deltas to their rows
with one UPSERT (`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n`) in one transaction.

Exactness:
- Nothing is counted twice: a delta leaves memory when its flush takes it, and is written by
  that flush alone. Counts made while a flush writes go into the new dict, for the next one.
- A failed write (database down) merges its deltas back into the dict: they go with the next
  flush. Only a commit whose acknowledgement is lost (the connection dies after the server
  committed) could then add them twice: the database cannot tell us, and we chose not to
  keep a log of applied flushes for that rare case.
- A crash (SIGKILL, power) loses what was counted since the last flush: at most one interval.
  A clean stop (SIGTERM) flushes everything first.
- Several processes each add their own deltas to the same rows: their sums add up.

Active devices are rows (organization, day, device), inserted once (ON CONFLICT DO NOTHING);
each process remembers which devices it already noted today so a device costs one set
look-up per message after its first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from fleetcore.db import Database
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore.usage import store
from fleetcore.usage.kinds import INTERNAL_TRANSPORTS, UsageKind

log = structlog.get_logger(__name__)

SECONDS_PER_DAY = 86_400
TodayKey = tuple[uuid.UUID, str]  # organization, kind


class DeviceRef(Protocol):
    """A device as the transports know it."""

    @property
    def organization_id(self) -> uuid.UUID: ...


class SentCommand(Protocol):
    """A command as the command service committed it."""

    @property
    def organization_id(self) -> uuid.UUID: ...

    @property
    def channel(self) -> str | None: ...


class UsageMeter:
    """Counts usage in memory; `flush` adds the counts to the database (a lifespan component)."""

    name = "usage-meter"

    def __init__(
        self, database: Database | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.database = database
        self.clock = clock
        self.flushes = 0  # successful flushes (tests wait on it)
        self._counts: dict[store.CountKey, int] = {}
        # This process's counts of today not yet in `_base` (what today() adds to it).
        self._local: dict[TodayKey, int] = {}
        self._local_day = self._day()
        self._inflight: dict[TodayKey, int] = {}  # being written by the flush in progress
        self._base: dict[TodayKey, int] = {}  # the database's totals of `_base_day`
        self._base_day = -1
        self._new_devices: set[tuple[uuid.UUID, int, uuid.UUID]] = set()
        self._seen: set[uuid.UUID] = set()  # devices noted on `_seen_day`
        self._seen_day = self._local_day
        self._lock = asyncio.Lock()

    def _day(self) -> int:
        return int(self.clock()) // SECONDS_PER_DAY

    # -- the hot path ------------------------------------------------------------------

    def count(
        self, organization_id: uuid.UUID, kind: UsageKind | str, n: int = 1, *, transport: str = ""
    ) -> None:
        """Add `n` to today's (UTC) counter; sync, O(1), never awaits, never raises."""
        kind = str(kind)  # a UsageKind and its value must be one dict key
        day = int(self.clock()) // SECONDS_PER_DAY
        key = (organization_id, day, kind, transport)
        counts = self._counts
        counts[key] = counts.get(key, 0) + n
        self._note_today(organization_id, kind, n, day)

    def _note_today(self, organization_id: uuid.UUID, kind: str, n: int, day: int) -> None:
        if day != self._local_day:  # midnight UTC: today's local counts start again
            self._local = {}
            self._local_day = day
        local = self._local
        today_key = (organization_id, kind)
        local[today_key] = local.get(today_key, 0) + n

    def device_seen(self, organization_id: uuid.UUID, device_id: uuid.UUID) -> None:
        """A device sent something today (devices active); O(1) after its first time a day."""
        day = int(self.clock()) // SECONDS_PER_DAY
        if day != self._seen_day:
            self._seen = set()
            self._seen_day = day
        if device_id in self._seen:
            return
        self._seen.add(device_id)
        self._new_devices.add((organization_id, day, device_id))
        # Until the next refresh: another process may have noted it too (then one too many).
        self._note_today(organization_id, UsageKind.DEVICES_ACTIVE, 1, day)

    def stored(self, items: Sequence[DeviceReadings], stored: Sequence[int]) -> None:
        """A committed ingest batch: readings stored, messages and devices, by transport."""
        # Summed per (organization, transport) first: a batch of single-reading messages
        # then costs a few dict operations per message, not three counter updates.
        readings: dict[tuple[uuid.UUID, str], int] = {}
        messages: dict[tuple[uuid.UUID, str], int] = {}
        day = int(self.clock()) // SECONDS_PER_DAY
        seen = self._seen if day == self._seen_day else set()
        for item, n in zip(items, stored, strict=True):
            key = (item.organization_id, item.transport)
            if n:
                readings[key] = readings.get(key, 0) + n
            if item.transport not in INTERNAL_TRANSPORTS:
                messages[key] = messages.get(key, 0) + 1
                if item.device_id not in seen:
                    self.device_seen(item.organization_id, item.device_id)
                    seen = self._seen
        for (org, transport), n in readings.items():
            self.count(org, UsageKind.READINGS, n, transport=transport)
        for (org, transport), n in messages.items():
            self.count(org, UsageKind.MESSAGES, n, transport=transport)

    def device_message(self, device: DeviceRef, transport: str) -> None:
        """A device message other than telemetry was taken (telemetry counts at its commit)."""
        self.count(device.organization_id, UsageKind.MESSAGES, transport=transport)

    def commands_sent(self, commands: Sequence[SentCommand]) -> None:
        """Commands just committed as sent to their devices (label: the channel)."""
        for command in commands:
            self.count(command.organization_id, UsageKind.COMMANDS, transport=command.channel or "")

    def notification_delivered(self, organization_id: uuid.UUID, channel_type: str) -> None:
        """A notification recorded as delivered (label: the channel type)."""
        self.count(organization_id, UsageKind.NOTIFICATIONS, transport=channel_type)

    def today(self, organization_id: uuid.UUID, kind: UsageKind | str) -> int:
        """Today's (UTC) total as this process knows it: the database at the last flush or
        refresh (every process's counts) + what this process counted since. Sync, O(1)."""
        kind = str(kind)
        day = self._day()
        key = (organization_id, kind)
        total = self._base.get(key, 0) if day == self._base_day else 0
        if day == self._local_day:
            total += self._inflight.get(key, 0) + self._local.get(key, 0)
        return total

    # -- flushing ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Counter rows and device notes waiting for the next flush."""
        return len(self._counts) + len(self._new_devices)

    async def flush(self) -> None:
        """Add what was counted since the last flush to the database; refresh today's totals.

        Raises what the database raised (the job logs it), after putting the deltas back.
        """
        if self.database is None:
            return
        async with self._lock:  # the job's flush and the final one never overlap
            counts, self._counts = self._counts, {}
            devices, self._new_devices = self._new_devices, set()
            local_day = self._local_day
            self._inflight, self._local = self._local, {}
            try:
                if counts or devices:
                    async with self.database.session(write=True) as session:
                        await store.add_counts(session, counts)
                        await store.add_device_days(session, devices)
                        await session.commit()
            except BaseException:
                self._merge_back(counts, devices, local_day)
                raise
            self.flushes += 1
            await self._refresh(local_day)

    async def _refresh(self, written_day: int) -> None:
        """Today's totals of every organization from the database (all processes' flushes)."""
        assert self.database is not None
        day = self._day()
        try:
            async with self.database.session() as session:
                base = await store.day_totals(session, store.day_of(day))
                await session.commit()
        except Exception as exc:  # the counts are written; only today() stays behind
            log.warning("usage_refresh_failed", error=str(exc).splitlines()[0][:300])
            if written_day == self._base_day:
                for key, n in self._inflight.items():
                    self._base[key] = self._base.get(key, 0) + n
        else:
            self._base, self._base_day = base, day
        self._inflight = {}

    def _merge_back(
        self,
        counts: dict[store.CountKey, int],
        devices: set[tuple[uuid.UUID, int, uuid.UUID]],
        local_day: int,
    ) -> None:
        """A failed flush: its deltas join what was counted meanwhile, for the next flush."""
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        self._new_devices |= devices
        if local_day == self._local_day:
            for today_key, n in self._inflight.items():
                self._local[today_key] = self._local.get(today_key, 0) + n
        self._inflight = {}

    async def flush_quietly(self) -> None:
        """The periodic job: a failure is logged; the deltas wait for the next flush."""
        try:
            await self.flush()
        except Exception as exc:
            log.warning(
                "usage_flush_failed", pending=self.pending, error=str(exc).splitlines()[0][:300]
            )

    # -- lifespan ----------------------------------------------------------------------

    async def start(self) -> None:
        """Learn today's totals so far (other processes', and this one's before a restart)."""
        if self.database is None:
            return
        await self._refresh(self._local_day)  # a failure is logged; today() starts at 0

    async def stop(self) -> None:
        """Flush everything counted (the components that count have stopped before)."""
        if self.database is None or not self.pending:
            return
        try:
            await self.flush()
        except Exception as exc:  # one more try: a database restarting
            log.warning("usage_final_flush_retry", error=str(exc).splitlines()[0][:300])
            await asyncio.sleep(1.0)
            await self.flush()  # raised: the lifespan logs what is lost
