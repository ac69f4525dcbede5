"""Rate limits of the account routes, on the sign-in limiter's machinery (fleetcore.ratelimits).

Two moving windows of an hour:
- per client address, every account request (sign-up, verification, reset request and
  confirmation, invitation acceptance): one machine cannot spray addresses or guess links;
- per email address, every request that sends a mail to it (sign-up, reset request): nobody
  can flood a mailbox through us.
The email window counts whether or not the address has an account, so hitting it says
nothing about the address (no enumeration through the limit either).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerHour

from fleetcore.config import Settings
from fleetcore.errors import RateLimited
from fleetcore.ratelimits import Limiter


class AccountLimiter:
    """Takes account requests; refuses (429 with Retry-After) once a window is full."""

    def __init__(self, limiter: Limiter, *, per_address: int, per_email: int) -> None:
        self._limiter = limiter
        self._address = RateLimitItemPerHour(per_address)
        self._email = RateLimitItemPerHour(per_email)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountLimiter:
        """In-memory by default; Redis when FLEETCORE_REDIS_URL is set."""
        return cls(
            Limiter(settings.redis_url, name="accounts"),
            per_address=settings.account_requests_per_address,
            per_email=settings.account_mails_per_email,
        )

    async def aclose(self) -> None:
        """Close its connections (Redis), when the app stops."""
        await self._limiter.aclose()

    async def request(self, address: str | None, *, email: str | None = None) -> None:
        """Count one request from `address` (and one mail to `email`); RateLimited if full."""
        where = f"accounts:address:{address or '-'}"
        if not await self._limiter.hit(self._address, where):
            await self._refuse(self._address, where)
        if email is not None:
            to = f"accounts:email:{email.strip().lower()}"
            if not await self._limiter.hit(self._email, to):
                await self._refuse(self._email, to)

    async def _refuse(self, item: RateLimitItem, key: str) -> None:
        stats = await self._limiter.window_stats(item, key)
        raise RateLimited(
            "too many account requests; try again later",
            retry_after_s=math.ceil(stats.reset_time - time.time()),
            code="ACCOUNT_RATE_LIMITED",
        )
