"""API rate limits (limits, moving windows of a minute): per API key, per user and per
organization, taken once the caller is known (auth.deps.optional_principal).

Which limits apply: an API key's own and its organization's; a user's own and the
organization's (a superuser without one: only their own). Each is requests per minute from
the settings; 0 leaves that one out. An organization's plan may set its own requests per
minute (fleetcore.plans): it replaces the settings' organization limit for that
organization. With the settings at 0 (the default) and no plan setting one, a request pays
two attribute checks (Settings.api_rate_limited, PlanCache.api_limited) and nothing more.

The narrow limit (key or user) is hit before the organization's: a caller refused by their
own limit does not spend the organization's budget, so one user's burst leaves colleagues
their share. The answer carries the IETF draft headers (RateLimit-Limit, -Remaining,
-Reset) of the tightest applying limit; a full window answers 429 RATE_LIMITED with
Retry-After and the limit's name. Device routes, /health, /ready and /metrics never resolve
a principal here, so they are never limited and pay nothing.

Storage is fleetcore.ratelimits.Limiter: Redis when FLEETCORE_REDIS_URL is set (shared by
every process), this process's memory otherwise.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute

from fleetcore.auth.principal import Principal, PrincipalKind
from fleetcore.config import Settings
from fleetcore.errors import RateLimited
from fleetcore.ratelimits import Limiter


@dataclass(frozen=True, slots=True)
class _Applying:
    name: str  # api_key | user | organization: what the 429 names
    item: RateLimitItem
    key: str


class ApiLimiter:
    """Takes one request per applying limit; refuses with 429 once a window is full."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        per_api_key: int,
        per_user: int,
        per_organization: int,
        plan_rate: Callable[[uuid.UUID], int | None] | None = None,
    ) -> None:
        self._limiter = limiter
        self._plan_rate = plan_rate  # an organization's plan value, overriding per_organization
        self._plan_items: dict[int, RateLimitItem] = {}
        self._api_key = RateLimitItemPerMinute(per_api_key) if per_api_key else None
        self._user = RateLimitItemPerMinute(per_user) if per_user else None
        self._organization = RateLimitItemPerMinute(per_organization) if per_organization else None

    @classmethod
    def from_settings(
        cls, settings: Settings, *, plan_rate: Callable[[uuid.UUID], int | None] | None = None
    ) -> ApiLimiter | None:
        """None when every limit is 0 (the default) and no plan may set one: nothing to take."""
        if not settings.api_rate_limited and plan_rate is None:
            return None
        return cls(
            Limiter(settings.redis_url, name="api"),
            per_api_key=settings.api_rate_limit_per_api_key,
            per_user=settings.api_rate_limit_per_user,
            per_organization=settings.api_rate_limit_per_organization,
            plan_rate=plan_rate,
        )

    async def aclose(self) -> None:
        """Close its connections (Redis), when the app stops."""
        await self._limiter.aclose()

    def _applying(self, principal: Principal) -> list[_Applying]:
        # Narrow first (see the module): the organization's budget is spent only by
        # requests the caller's own limit let through.
        found: list[_Applying] = []
        own = self._api_key if principal.kind is PrincipalKind.API_KEY else self._user
        if own is not None:
            name = principal.kind.value
            found.append(_Applying(name, own, f"api:{name}:{principal.subject_id}"))
        org_id = principal.organization_id
        if org_id is None:
            return found
        organization: RateLimitItem | None = self._organization
        planned = self._plan_rate(org_id) if self._plan_rate is not None else None
        if planned is not None:
            organization = self._plan_items.get(planned)
            if organization is None:
                organization = self._plan_items[planned] = RateLimitItemPerMinute(planned)
        if organization is not None:
            key = f"api:organization:{org_id}"
            found.append(_Applying("organization", organization, key))
        return found

    async def take(self, principal: Principal) -> dict[str, str]:
        """Count the request; the RateLimit headers of the tightest limit, or RateLimited."""
        tightest: dict[str, str] = {}
        least = math.inf
        for limit in self._applying(principal):
            if not await self._limiter.hit(limit.item, limit.key):
                raise await self._refusal(limit)
            stats = await self._limiter.window_stats(limit.item, limit.key)
            if stats.remaining < least:
                least = stats.remaining
                tightest = _headers(limit.item, stats.remaining, stats.reset_time)
        return tightest

    async def _refusal(self, limit: _Applying) -> RateLimited:
        stats = await self._limiter.window_stats(limit.item, limit.key)
        headers = _headers(limit.item, 0, stats.reset_time)
        refused = RateLimited(
            f"too many requests per {limit.name.replace('_', ' ')}; retry after "
            f"{headers['RateLimit-Reset']} s",
            retry_after_s=int(headers["RateLimit-Reset"]),
            details={"limit": limit.name, "per": "minute"},
        )
        refused.headers.update(headers)
        return refused


def _headers(item: RateLimitItem, remaining: int, reset_time: float) -> dict[str, str]:
    """The IETF draft's fields: the limit, what is left, seconds until the window frees one."""
    reset = max(1, math.ceil(reset_time - time.time()))
    return {
        "RateLimit-Limit": str(item.amount),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(reset),
    }
