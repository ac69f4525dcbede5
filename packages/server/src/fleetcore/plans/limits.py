"""The limits a plan sets, and the answers for going over them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from fleetcore.errors import Forbidden, RateLimited


class Limit(StrEnum):
    """A plan's limits by the name answers give them (the column is max_<name>)."""

    DEVICES = "devices"
    READINGS_PER_DAY = "readings_per_day"
    MESSAGES_PER_SECOND = "messages_per_second"
    RETENTION_DAYS = "retention_days"
    API_REQUESTS_PER_MINUTE = "api_requests_per_minute"
    USERS = "users"

    @property
    def column(self) -> str:
        """The Plan attribute holding it."""
        return f"max_{self.value}"


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """An organization's limits as the hot path reads them (None: unlimited)."""

    plan_id: str
    plan_name: str
    devices: int | None = None
    readings_per_day: int | None = None
    messages_per_second: int | None = None
    retention_days: int | None = None
    api_requests_per_minute: int | None = None
    users: int | None = None

    def of(self, limit: Limit) -> int | None:
        """The value of one limit."""
        value: int | None = getattr(self, limit.value)
        return value


def plan_limit(limit: Limit, maximum: int, used: int) -> Forbidden:
    """403 PLAN_LIMIT: creating one more would go over the plan."""
    return Forbidden(
        f"the organization's plan allows {maximum} {limit.value.replace('_', ' ')}; {used} in use",
        code="PLAN_LIMIT",
        details={"limit": limit.value, "max": maximum, "used": used},
    )


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    """Why a device message was refused by its organization's plan (the transport answers:
    HTTP 429 with Retry-After, MQTT a dead letter quota_exceeded and reason code 0x97)."""

    limit: Limit
    maximum: int
    retry_after_s: int

    @property
    def message(self) -> str:
        """Said to the device (HTTP) or stored as the dead letter's detail (MQTT)."""
        return (
            f"over the organization's plan: {self.maximum} "
            f"{self.limit.value.replace('_', ' ')}; retry after {self.retry_after_s} s"
        )

    def error(self) -> RateLimited:
        """The HTTP answer: 429 QUOTA_EXCEEDED naming the limit."""
        return RateLimited(
            self.message,
            retry_after_s=self.retry_after_s,
            code="QUOTA_EXCEEDED",
            details={"limit": self.limit.value, "max": self.maximum},
        )


def seconds_to_midnight(now: datetime | None = None) -> int:
    """Seconds until the next UTC midnight (when a daily quota starts again), at least 1."""
    now = now or datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds() + 0.999))
