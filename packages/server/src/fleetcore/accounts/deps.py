"""Dependencies of the account routes: the context (link base, mailer) and the rate limit."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleetcore.accounts.limits import AccountLimiter
from fleetcore.accounts.service import Context
from fleetcore.deps import SettingsDep
from fleetcore.errors import Unavailable
from fleetcore.request_context import current_client_address


def link_base(request: Request) -> str:
    """Where links in mails point: FLEETCORE_PUBLIC_URL, else (not in production) the address
    the request came to. Production refuses the fallback: the Host header is the client's,
    and a reset link built from it would send the victim's token to the attacker's host."""
    settings = request.app.state.settings
    if settings.public_url:
        return str(settings.public_url).rstrip("/")
    if settings.environment == "production":
        raise Unavailable(
            "account links need FLEETCORE_PUBLIC_URL (the address users open Fleetcore at)",
            code="PUBLIC_URL_REQUIRED",
        )
    return str(request.base_url).rstrip("/")


async def account_context(request: Request, settings: SettingsDep) -> Context:
    """Settings, the mailer and the link base of this request."""
    return Context(
        settings=settings, mailer=request.app.state.account_mailer, base_url=link_base(request)
    )


async def limit(request: Request, email: str | None = None) -> None:
    """Count an account request from the client's address (and a mail to `email`)."""
    limiter: AccountLimiter = request.app.state.account_limiter
    await limiter.request(current_client_address(), email=email)


ContextDep = Annotated[Context, Depends(account_context)]
