"""Wait on a condition with a deadline, never a fixed sleep.

`wait_until` in the test's event loop, `wait_until_sync` in plain threads and synchronous
tests (subprocesses, threaded servers). Both poll: the short sleep between tries is the only
sleep the tests need.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]], *, within: float = 10.0, every: float = 0.01
) -> None:
    """Poll `predicate` until it is true; fail when `within` seconds pass first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        outcome = predicate()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(every)


def wait_until_sync(
    predicate: Callable[[], bool],
    *,
    within: float = 10.0,
    every: float = 0.01,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll `predicate` in this thread until it is true; fail when `within` seconds pass
    first, with `explain()` (a log tail) in the message."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s\n{explain()}")
        time.sleep(every)
