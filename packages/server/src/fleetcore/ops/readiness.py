"""Readiness checks: each component registers one; /ready runs them all with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fleetcore.db import Database
from fleetcore.migrate import is_current

Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT_S = 2.0


class NotReady(Exception):
    """A check's reason for failing."""


class Degraded(Exception):
    """A check's reason for "degraded": the process serves, with less (Redis unreachable)."""


class Warn(Exception):
    """A check's warning: still ready, but someone should look (a disk filling up)."""


DEGRADED = "degraded"
WARN_PREFIX = "warn: "


def passing(result: str) -> bool:
    """True for a result that keeps the process ready: ok, degraded or a warning."""
    return result in ("ok", DEGRADED) or result.startswith(WARN_PREFIX)


async def _run_one(check: Check) -> str:
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT_S:g}s"
    except NotReady as exc:
        return str(exc)
    except Degraded:
        return DEGRADED
    except Warn as exc:
        return f"{WARN_PREFIX}{exc}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return "ok"


async def run_checks(checks: Mapping[str, Check]) -> dict[str, str]:
    """Run every check concurrently: name -> 'ok', 'degraded', 'warn: ...' or the reason
    it failed."""
    names = list(checks)
    outcomes = await asyncio.gather(*(_run_one(checks[name]) for name in names))
    return dict(zip(names, outcomes, strict=True))


def database_checks(database: Database) -> dict[str, Check]:
    """The database answers, and its schema is at the head migration."""

    async def migrations() -> None:
        if not await is_current(database):
            raise NotReady("schema is not at the latest migration; run `fleetcore db upgrade`")

    return {"database": database.ping, "migrations": migrations}
