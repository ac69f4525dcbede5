"""Sign-in limits (limits, moving windows): an attempt is counted before its password is checked.

Three windows, each answering a different attacker:
- an account from one client address (10 per 15 min): one machine guessing one password.
  Only that address is locked out; the owner signing in from elsewhere is not.
- an account from all addresses together (30 per minute): many machines guessing one
  password are slowed to that rate, and the owner waits at most a minute, not 15.
- one client address across accounts (50 failures per 15 min): one machine spraying a
  common password over many accounts.

The account windows take the attempt (an atomic hit) before the argon2 check, so concurrent
guesses cannot all pass before any is counted; a good password clears them. The address
window counts failures only, so an office behind one NAT address is not throttled by its
own successful sign-ins.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond

from fleetcore.config import Settings
from fleetcore.errors import RateLimited
from fleetcore.ratelimits import Limiter


class LoginLimiter:
    """Takes sign-in attempts; refuses (429 with Retry-After) once a window is full."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        per_account: int,
        per_address: int,
        window_s: int,
        per_account_per_minute: int,
    ) -> None:
        self._limiter = limiter
        self._pair = RateLimitItemPerSecond(per_account, window_s)
        self._account = RateLimitItemPerSecond(per_account_per_minute, 60)
        self._address = RateLimitItemPerSecond(per_address, window_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimiter:
        """In-memory by default; Redis when FLEETCORE_REDIS_URL is set (shared by processes,
        this process's memory while Redis does not answer)."""
        return cls(
            Limiter(settings.redis_url, name="login"),
            per_account=settings.login_max_failures_per_account,
            per_address=settings.login_max_failures_per_address,
            window_s=settings.login_failure_window_s,
            per_account_per_minute=settings.login_max_attempts_per_account_per_minute,
        )

    async def aclose(self) -> None:
        """Close its connections (Redis), when the app stops."""
        await self._limiter.aclose()

    @staticmethod
    def _keys(email: str, address: str | None) -> tuple[str, str, str]:
        account = email.lower()
        where = address or "-"
        return f"login:pair:{account}:{where}", f"login:account:{account}", f"login:address:{where}"

    async def attempt(self, email: str, address: str | None) -> None:
        """Take one attempt before the password is checked; RateLimited if a window is full."""
        pair, account, addr = self._keys(email, address)
        if not await self._limiter.test(self._address, addr):
            await self._refuse(self._address, addr)
        if not await self._limiter.hit(self._pair, pair):
            await self._refuse(self._pair, pair)
        if not await self._limiter.hit(self._account, account):
            await self._refuse(self._account, account)

    async def failed(self, address: str | None) -> None:
        """Count a failed attempt against the client address (the account windows have it)."""
        await self._limiter.hit(self._address, self._keys("", address)[2])

    async def succeeded(self, email: str, address: str | None) -> None:
        """A good password clears the account's windows (the address keeps its failures)."""
        pair, account, _ = self._keys(email, address)
        await self._limiter.clear(self._pair, pair)
        await self._limiter.clear(self._account, account)

    async def _refuse(self, item: RateLimitItem, key: str) -> None:
        stats = await self._limiter.window_stats(item, key)
        raise RateLimited(
            "too many sign-in attempts; try again later",
            retry_after_s=math.ceil(stats.reset_time - time.time()),
            code="LOGIN_RATE_LIMITED",
        )
