"""Hold one SQL statement of the app's, on the real database, until the test lets it run.

The statement's task waits in its query (in the session's greenlet, on the event loop) while
everything else is served: how a test makes an interleaving happen every time instead of
under load only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.util import await_only

from fleetcore.db import Database


@dataclass(slots=True)
class Hold:
    """A held statement: `reached` once it waits, `release` to let it run."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    resumed: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def first_statement_held(
    database: Database, matches: Callable[[str], bool]
) -> AsyncIterator[Hold]:
    """Hold the first statement that `matches`, whoever runs it, until `release` (or the end)."""
    hold = Hold()

    def pause(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        if hold.reached.is_set() or not matches(statement):
            return
        hold.reached.set()
        await_only(hold.release.wait())  # in the session's greenlet, on the event loop
        hold.resumed.set()

    target = database.engine.sync_engine
    event.listen(target, "before_cursor_execute", pause)
    try:
        yield hold
    finally:
        hold.release.set()
        if hold.reached.is_set():  # removed mid-dispatch, the listeners' deque would change
            await asyncio.wait_for(hold.resumed.wait(), 10)  # under the statement's iteration
        event.remove(target, "before_cursor_execute", pause)


def first_read_held(database: Database, table: str) -> AbstractAsyncContextManager[Hold]:
    """Hold the first SELECT from `table`."""
    marker = f"FROM {table}"
    return first_statement_held(
        database, lambda statement: statement.startswith("SELECT") and marker in statement
    )
