"""The plan's limits on device messages, asked by the device-message layer for each one.

- Messages per second per organization: a moving window (fleetcore.ratelimits.Limiter:
  Redis when configured, shared by every process). Asynchronous, so only messages of
  organizations whose plan sets it take that path (`rated`).
- Readings per day: the usage meter's count of today (UTC) against the plan, synchronously
  (the meter answers from memory). Soft limits at 80% and 100% tell the admins in-app, once
  per threshold and day (fleetcore.plans.notify), written in the background.

An organization without a plan costs one dict miss (fleetcore.plans.cache). A refusal is a
QuotaRefusal the transport turns into its own answer; nothing here knows MQTT or HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime
from typing import Any, Protocol

import structlog
from limits import RateLimitItemPerSecond

from fleetcore.db import Database
from fleetcore.plans import notify
from fleetcore.plans.cache import PlanCache
from fleetcore.plans.limits import Limit, QuotaRefusal, seconds_to_midnight
from fleetcore.ratelimits import Limiter

log = structlog.get_logger(__name__)

READINGS = "readings"  # the usage meter's kind (fleetcore.usage.kinds.UsageKind.READINGS)


class UsageToday(Protocol):
    """The usage meter as plans reads it (fleetcore.usage.meter.UsageMeter, wired by the app)."""

    def today(self, organization_id: uuid.UUID, kind: Any) -> int:
        """Today's (UTC) total of a kind for the organization, as this process knows it."""
        ...


class IngestQuota:
    """Asks the organization's plan whether one more device message, or n readings, fit."""

    def __init__(
        self,
        cache: PlanCache,
        *,
        limiter: Limiter,
        meter: UsageToday | None,
        database: Database,
    ) -> None:
        self.cache = cache
        self.limiter = limiter
        self.meter = meter  # None until the usage meter is wired: no readings quota
        self.database = database
        self._windows: dict[int, RateLimitItemPerSecond] = {}
        self._told: set[tuple[uuid.UUID, int, date]] = set()  # soft limits told, this process
        self._told_day: date | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def rated(self, organization_id: uuid.UUID) -> bool:
        """Whether the organization's plan limits messages per second (the async path)."""
        limits = self.cache.limits_of(organization_id)
        return limits is not None and limits.messages_per_second is not None

    async def take_message(self, organization_id: uuid.UUID) -> QuotaRefusal | None:
        """Count one device message against the organization's window; a refusal when full."""
        limits = self.cache.limits_of(organization_id)
        maximum = limits.messages_per_second if limits else None
        if maximum is None:
            return None
        item = self._windows.get(maximum)
        if item is None:
            item = self._windows[maximum] = RateLimitItemPerSecond(maximum)
        if await self.limiter.hit(item, "plan:messages", str(organization_id)):
            return None
        return QuotaRefusal(Limit.MESSAGES_PER_SECOND, maximum, retry_after_s=1)

    def check_readings(self, organization_id: uuid.UUID, count: int) -> QuotaRefusal | None:
        """Whether `count` more readings fit in today's quota; a refusal when they do not."""
        limits = self.cache.limits_of(organization_id)
        if limits is None or limits.readings_per_day is None or self.meter is None:
            return None
        maximum = limits.readings_per_day
        used = self.meter.today(organization_id, READINGS)
        after = used + count
        if after > maximum:
            self._warn(organization_id, max(used, maximum), maximum)
            return QuotaRefusal(Limit.READINGS_PER_DAY, maximum, seconds_to_midnight())
        if after * 100 >= notify.THRESHOLDS[0] * maximum:  # below the first: nothing to tell
            self._warn(organization_id, after, maximum)
        return None

    def _warn(self, organization_id: uuid.UUID, used: int, maximum: int) -> None:
        day = datetime.now(UTC).date()
        if day != self._told_day:  # a new day: yesterday's notices are forgotten
            self._told.clear()
            self._told_day = day
        new = [
            t for t in notify.reached(used, maximum) if (organization_id, t, day) not in self._told
        ]
        if not new:
            return
        self._told.update((organization_id, t, day) for t in new)
        task = asyncio.get_running_loop().create_task(
            self._write_notices(organization_id, used, maximum, day)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_notices(
        self, organization_id: uuid.UUID, used: int, maximum: int, day: date
    ) -> None:
        try:
            async with self.database.session(write=True) as session:
                await notify.warn(
                    session,
                    organization_id,
                    Limit.READINGS_PER_DAY,
                    used=used,
                    maximum=maximum,
                    today=day,
                )
                await session.commit()
        except Exception:  # a lost notice must not touch ingest; told again tomorrow
            log.exception("plan_notice_failed", organization_id=str(organization_id))
            self._told.difference_update((organization_id, t, day) for t in notify.THRESHOLDS)

    async def drain(self) -> None:
        """Wait for notices being written (the app is stopping; tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
