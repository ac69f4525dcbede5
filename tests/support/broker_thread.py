"""Our embedded broker (FleetBroker, in-memory hooks) on its own event loop in a thread.

For property tests that throw many raw connections at one running broker from plain
sockets: starting a broker per example would cost more than the examples. Every log record
at ERROR or above is kept: the broker's read loops and asyncio log there what escaped them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.support.brokers import running
from tests.support.postgres import free_port

START_TIMEOUT_S = 30.0


@dataclass
class BrokerThread:
    """Where the broker listens and what it logged at ERROR."""

    port: int
    errors: list[logging.LogRecord] = field(default_factory=list)


class _Keep(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@contextmanager
def broker_in_thread() -> Iterator[BrokerThread]:
    """A FleetBroker serving on a free port until the block ends."""
    found = BrokerThread(free_port())
    keep = _Keep(found.errors)
    logging.getLogger().addHandler(keep)
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    loop: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        loop.append(asyncio.get_running_loop())
        async with running("fleet", found.port):
            ready.set()
            await stop[0].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        if not ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the broker did not start")
        yield found
    finally:
        if loop:
            loop[0].call_soon_threadsafe(stop[0].set)
        thread.join(START_TIMEOUT_S)
        logging.getLogger().removeHandler(keep)
