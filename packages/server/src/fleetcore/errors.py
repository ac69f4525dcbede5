"""The domain errors services raise: what went wrong, in the platform's words.

No web framework here (tests/test_layering.py holds that): services, the MQTT path, jobs and
the CLI raise these without pulling in FastAPI. Each kind carries its HTTP status as a plain
number because the status is part of what the error means to a caller (a 404 promises nothing
leaks about other organizations); turning an error into a response, the JSON envelope or an
HTML page, is the web layer's (fleetcore.web.errors).
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of the errors services raise; each subclass carries its HTTP status."""

    status_code = 400
    default_code = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details or {}
        self.headers = headers or {}


class Invalid(DomainError):
    """The request is well-formed but breaks a rule."""

    status_code = 422
    default_code = "INVALID"


class Unauthorized(DomainError):
    """No valid credentials."""

    status_code = 401
    default_code = "UNAUTHORIZED"


class Forbidden(DomainError):
    """Valid credentials, not enough rights."""

    status_code = 403
    default_code = "FORBIDDEN"


class NotFound(DomainError):
    """Missing, or belongs to another organization (never a hint which)."""

    status_code = 404
    default_code = "NOT_FOUND"


class Conflict(DomainError):
    """Clashes with existing state (duplicate, wrong state)."""

    status_code = 409
    default_code = "CONFLICT"


class RequestTimeout(DomainError):
    """Nothing happened within the time the caller was willing to wait (long-poll)."""

    status_code = 408
    default_code = "REQUEST_TIMEOUT"


class PayloadTooLarge(DomainError):
    """The body exceeds a hard limit."""

    status_code = 413
    default_code = "PAYLOAD_TOO_LARGE"


class RateLimited(DomainError):
    """Too many attempts; retry later."""

    status_code = 429
    default_code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_s: int, **kwargs: Any) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, retry_after_s))}, **kwargs)


class Unavailable(DomainError):
    """The platform is overloaded or a dependency is down; retry later."""

    status_code = 503
    default_code = "UNAVAILABLE"


class InsufficientStorage(DomainError):
    """The database's disk is full: nothing more can be stored until space is freed."""

    status_code = 507
    default_code = "STORAGE_FULL"
