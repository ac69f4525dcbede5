"""Failed-login limits: a moving window per account and per client address (limits)."""

from __future__ import annotations

import math
import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from fleetcore.config import Settings
from fleetcore.errors import RateLimited


class LoginLimiter:
    """Counts failed sign-ins; refuses further attempts once a window is full."""

    def __init__(self, storage: Storage, *, per_account: int, per_address: int, window_s: int):
        self._limiter = MovingWindowRateLimiter(storage)
        self._account = RateLimitItemPerSecond(per_account, window_s)
        self._address = RateLimitItemPerSecond(per_address, window_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimiter:
        """In-memory by default; Redis when FLEETCORE_REDIS_URL is set (shared by processes)."""
        storage: Storage = MemoryStorage()
        if settings.redis_url:
            shared = storage_from_string("async+" + settings.redis_url)
            assert isinstance(shared, Storage)
            storage = shared
        return cls(
            storage,
            per_account=settings.login_max_failures_per_account,
            per_address=settings.login_max_failures_per_address,
            window_s=settings.login_failure_window_s,
        )

    @staticmethod
    def _keys(email: str, address: str | None) -> tuple[str, str]:
        return f"login:account:{email.lower()}", f"login:address:{address or '-'}"

    async def check(self, email: str, address: str | None) -> None:
        """Raise RateLimited (with Retry-After) if either window is full."""
        for item, key in zip(
            (self._account, self._address), self._keys(email, address), strict=True
        ):
            if not await self._limiter.test(item, key):
                stats = await self._limiter.get_window_stats(item, key)
                retry = math.ceil(stats.reset_time - time.time())
                raise RateLimited(
                    "too many failed sign-in attempts; try again later",
                    retry_after_s=retry,
                    code="LOGIN_RATE_LIMITED",
                )

    async def failed(self, email: str, address: str | None) -> None:
        """Count one failed attempt against the account and the address."""
        account, addr = self._keys(email, address)
        await self._limiter.hit(self._account, account)
        await self._limiter.hit(self._address, addr)

    async def succeeded(self, email: str) -> None:
        """A good sign-in clears the account's failures (the address keeps its count)."""
        await self._limiter.clear(self._account, self._keys(email, None)[0])
