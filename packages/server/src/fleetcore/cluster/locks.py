"""Per-device command locks across processes (fleetcore.commands.delivery.DeviceLocks).

The process's own asyncio lock first (holders here queue there, not on Redis), then
`SET fleetcore:lock:device:<id> <random token> NX PX <ttl>`, retried with a short backoff;
released by a Lua compare-and-delete, so a holder whose lock expired never deletes the next
holder's. The TTL (30 s) frees the lock of a process that died holding it. Redis unreachable,
or still taken after WAIT_S: the holder goes ahead on its process lock alone (logged), and
the conditional UPDATEs of commands/transitions.py decide which state change wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from fleetcore.cluster.link import RedisLink, RedisUnavailable
from fleetcore.commands.delivery import LocalLocks

log = structlog.get_logger(__name__)

PREFIX = "fleetcore:lock:device:"
TTL_MS = 30_000
WAIT_S = 30.0
# KEYS[1] the lock, ARGV[1] the holder's token: delete only if it is still ours.
RELEASE = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""


class RedisDeviceLocks:
    """DeviceLocks held in Redis, so one process at a time sends a device's commands."""

    def __init__(self, link: RedisLink, *, ttl_ms: int = TTL_MS, wait_s: float = WAIT_S) -> None:
        self.link = link
        self.ttl_ms = ttl_ms
        self.wait_s = wait_s
        self._local = LocalLocks()
        self._release = link.client.register_script(RELEASE)

    @asynccontextmanager
    async def hold(self, device_id: uuid.UUID) -> AsyncIterator[bool]:
        """Hold the device's lock; yields whether Redis granted it (False: process-only)."""
        async with self._local.hold(device_id):
            key = PREFIX + str(device_id)
            token = await self._acquire(key, device_id)
            try:
                yield token is not None
            finally:
                if token is not None:
                    with contextlib.suppress(RedisUnavailable):  # else it expires by itself
                        await self.link.call(self._release(keys=[key], args=[token]))

    async def _acquire(self, key: str, device_id: uuid.UUID) -> str | None:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait_s
        delay = 0.005
        while True:
            if not self.link.up:
                log.warning("command_lock_local_only", device_id=str(device_id), reason="redis")
                return None
            try:
                taken = await self.link.call(
                    self.link.client.set(key, token, nx=True, px=self.ttl_ms)
                )
            except RedisUnavailable:
                log.warning("command_lock_local_only", device_id=str(device_id), reason="redis")
                return None
            if taken:
                return token
            if time.monotonic() >= deadline:
                log.warning("command_lock_local_only", device_id=str(device_id), reason="wait")
                return None
            await asyncio.sleep(delay)
            delay = min(0.1, delay * 2)
