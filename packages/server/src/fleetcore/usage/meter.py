"""The usage meter: in-memory counters on the hot path, flushed to the database periodically.

Counting is a dict increment keyed by (organization, UTC day, kind, transport): no await, no
lock, no I/O (call it from the event loop's thread, as every caller does). A flush (the
`usage.flush` job every `usage_flush_interval_s`, 10 s, and once more when the process stops)
swaps the dict for an empty one *before* writing, then adds the swapped deltas to their rows
with one UPSERT (`INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n`) in one transaction.

Exactness:
- Nothing is counted twice: a delta leaves memory when its flush takes it, and is written by
  that flush alone. Counts made while a flush writes go into the new dict, for the next one.
- Each flush's deltas carry a random flush id, inserted into `usage_flushes` in the same
  transaction; the deltas are added only when that insert went in (the id was new).
- A write that fails before its commit (database down, a statement refused) committed
  nothing: its deltas are merged back into the dict and go with the next flush.
- A commit that fails (the connection dies while committing: the server may have committed
  and only the acknowledgement was lost) has an unknown outcome: its deltas are kept apart
  with their flush id, and every later flush writes them again under that same id. The id
  decides: already in `usage_flushes` means the first attempt committed, and they are not
  added again; else they are added now, once. (On PostgreSQL an insert of an id whose first
  transaction is somehow still in flight waits for it: the unique index.) Flush ids are
  pruned after store.FLUSH_IDS_KEPT_DAYS (7) by the roll-up job: a retry never comes that late.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Database
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore.usage import store
from fleetcore.usage.kinds import INTERNAL_TRANSPORTS, UsageKind

log = structlog.get_logger(__name__)

SECONDS_PER_DAY = 86_400
TodayKey = tuple[uuid.UUID, str]  # organization, kind
DeviceDay = tuple[uuid.UUID, int, uuid.UUID]  # organization, epoch day, device


@dataclass(slots=True)
class _Batch:
    """What one flush took from memory, under the id that makes writing it idempotent."""

    id: uuid.UUID
    counts: dict[store.CountKey, int]
    devices: set[DeviceDay]
    today: dict[TodayKey, int]  # its part of today's totals (today())
    day: int  # the epoch day `today` is of

    @property
    def empty(self) -> bool:
        return not (self.counts or self.devices)


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
        self._writing: list[_Batch] = []  # being written by the flush in progress
        self._unsure: list[_Batch] = []  # their commit's outcome unknown: written again
        self._base: dict[TodayKey, int] = {}  # the database's totals of `_base_day`
        self._base_day = -1
        self._new_devices: set[DeviceDay] = set()
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
            total += self._local.get(key, 0)
        for batch in self._writing or self._unsure:  # a flush writes the unsure ones too
            if batch.day == day:
                total += batch.today.get(key, 0)
        return total

    # -- flushing ----------------------------------------------------------------------

    @property
    def writes(self) -> bool:
        """False without a database, or on one that allows no background writes."""
        return self.database is not None and self.database.background_writes_allowed

    @property
    def pending(self) -> int:
        """Counter rows and device notes waiting for the next flush (unsure ones included)."""
        unsure = sum(len(b.counts) + len(b.devices) for b in self._unsure)
        return len(self._counts) + len(self._new_devices) + unsure

    async def flush(self) -> None:
        """Add what was counted since the last flush to the database; refresh today's totals.

        Raises what the database raised (the job logs it), after keeping the deltas.
        """
        if not self.writes:
            return
        assert self.database is not None
        async with self._lock:  # the job's flush and the final one never overlap
            batch = _Batch(
                uuid.uuid4(), self._counts, self._new_devices, self._local, self._local_day
            )
            self._counts, self._new_devices, self._local = {}, set(), {}
            writing = [*self._unsure, batch]
            self._writing, self._unsure = writing, []
            committing = False
            try:
                if any(not b.empty for b in writing):
                    async with self.database.session(write=True) as session:
                        counts, devices = await self._claim(session, writing)
                        await store.add_counts(session, counts)
                        await store.add_device_days(session, devices)
                        committing = True  # an error from here on may come after the commit
                        await session.commit()
            except BaseException:
                self._writing = []
                self._failed(batch, writing, maybe_committed=committing)
                raise
            self.flushes += 1
            await self._refresh(writing)

    async def _claim(
        self, session: AsyncSession, batches: list[_Batch]
    ) -> tuple[dict[store.CountKey, int], set[DeviceDay]]:
        """Record each batch's flush id; the deltas of those no earlier attempt committed."""
        at = datetime.fromtimestamp(self.clock(), UTC)
        counts: dict[store.CountKey, int] = {}
        devices: set[DeviceDay] = set()
        for batch in batches:
            if batch.empty:
                continue
            if not await store.claim_flush(session, batch.id, at):
                # Its acknowledgement was lost, not its commit: already added.
                log.info("usage_flush_already_committed", flush_id=str(batch.id))
                continue
            for key, n in batch.counts.items():
                counts[key] = counts.get(key, 0) + n
            devices |= batch.devices
        return counts, devices

    def _failed(self, batch: _Batch, writing: list[_Batch], *, maybe_committed: bool) -> None:
        """Keep a failed flush's deltas for the next one."""
        if maybe_committed:
            # Unknown outcome: each batch is written again under its own id (see above).
            self._unsure = [b for b in writing if not b.empty]
            return
        # Nothing committed. Batches unsure before stay unsure (their first attempt still
        # may have committed); this flush's own deltas join what was counted meanwhile.
        self._unsure = [b for b in writing if b is not batch and not b.empty]
        for key, n in batch.counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        self._new_devices |= batch.devices
        if batch.day == self._local_day:
            for today_key, n in batch.today.items():
                self._local[today_key] = self._local.get(today_key, 0) + n

    async def _refresh(self, written: Sequence[_Batch] = ()) -> None:
        """Today's totals of every organization from the database (all processes' flushes)."""
        assert self.database is not None
        day = self._day()
        try:
            async with self.database.session() as session:
                base = await store.day_totals(session, store.day_of(day))
                await session.commit()
        except Exception as exc:  # the counts are written; only today() stays behind
            log.warning("usage_refresh_failed", error=str(exc).splitlines()[0][:300])
            for batch in written:
                if batch.day == self._base_day:
                    for key, n in batch.today.items():
                        self._base[key] = self._base.get(key, 0) + n
        else:
            self._base, self._base_day = base, day
        self._writing = []

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
        if not self.writes:
            return
        await self._refresh()  # a failure is logged; today() starts at 0

    async def stop(self) -> None:
        """Flush everything counted (the components that count have stopped before)."""
        if not self.writes or not self.pending:
            return
        try:
            await self.flush()
        except Exception as exc:  # one more try: a database restarting
            log.warning("usage_final_flush_retry", error=str(exc).splitlines()[0][:300])
            await asyncio.sleep(1.0)
            await self.flush()  # raised: the lifespan logs what is lost
