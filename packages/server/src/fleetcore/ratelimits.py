"""Moving-window rate limits on `limits` storage: shared by every process through Redis when
FLEETCORE_REDIS_URL is set, in this process's memory otherwise (one code path, two storages).

Redis unreachable (no answer within 0.5 s): the limits fall back to this process's memory,
with one log line, and Redis is asked again after `RETRY_S`; while it is down each process
counts on its own, so a client spread over N processes gets up to N times the limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.util import WindowStats
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

TIMEOUT_S = 0.5
RETRY_S = 5.0

T = TypeVar("T")


def shared_storage(pool: ConnectionPool) -> Storage:
    """`limits`' asyncio Redis storage on redis-py, on our connection pool."""
    return RedisStorage(
        "async+redis://",
        implementation="redispy",
        wrap_exceptions=True,
        connection_pool=pool,  # type: ignore[arg-type]  # passed through to redis-py
        key_prefix="fleetcore:limits",
    )


class Limiter:
    """hit / test / clear / stats of moving windows, on Redis or memory (see the module)."""

    def __init__(self, redis_url: str | None = None, *, name: str = "limits") -> None:
        self.name = name
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._pool: ConnectionPool | None = None
        self._shared: MovingWindowRateLimiter | None = None
        if redis_url:
            self._pool = ConnectionPool.from_url(
                redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
            )
            self._shared = MovingWindowRateLimiter(shared_storage(self._pool))
        self._retry_at = 0.0  # while Redis is down: when to ask it again

    async def aclose(self) -> None:
        """Close the connections to Redis (the app is stopping)."""
        if self._pool is not None:
            await self._pool.disconnect()

    @property
    def shared(self) -> bool:
        """Whether the limits are counted in Redis right now."""
        return self._shared is not None and self._retry_at == 0.0

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Count one; False if the window was already full."""
        return await self._run(lambda limiter: limiter.hit(item, *identifiers))

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        """Whether one more would fit, counting nothing."""
        return await self._run(lambda limiter: limiter.test(item, *identifiers))

    async def clear(self, item: RateLimitItem, *identifiers: str) -> None:
        """Forget the window."""
        await self._run(lambda limiter: limiter.clear(item, *identifiers))

    async def window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        """When the window resets and what is left."""
        return await self._run(lambda limiter: limiter.get_window_stats(item, *identifiers))

    async def _run(self, work: Callable[[MovingWindowRateLimiter], Awaitable[T]]) -> T:
        shared = self._shared
        if shared is not None and time.monotonic() >= self._retry_at:
            try:
                async with asyncio.timeout(TIMEOUT_S * 2):
                    outcome = await work(shared)
            except (StorageError, RedisError, OSError, TimeoutError) as exc:  # count here
                if self._retry_at == 0.0:
                    log.warning(
                        "rate_limits_local", limiter=self.name, error=str(exc)[:200] or repr(exc)
                    )
                self._retry_at = time.monotonic() + RETRY_S
            else:
                if self._retry_at:
                    log.info("rate_limits_shared", limiter=self.name)
                    self._retry_at = 0.0
                return outcome
        return await work(self._local)
