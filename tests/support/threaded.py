"""The app under a real uvicorn in a thread with its own event loop, for synchronous clients.

Schemathesis calls the API with blocking `requests`; a server on the test's own loop would
not run while it waits, so this one gets a loop (and a database) of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI

from fleetcore import migrate
from fleetcore.db import Database
from tests.conftest import running_app
from tests.support.serving import serving

T = TypeVar("T")


class ThreadedServer:
    """Start with `start()`; `run(coro)` runs a coroutine on the server's loop; `stop()`."""

    def __init__(self, database_url: str, tmp_path: Path, **overrides: object) -> None:
        self._database_url = database_url
        self._tmp_path = tmp_path
        self._overrides = overrides
        self._thread = threading.Thread(target=self._main, name="threaded-server", daemon=True)
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self.base_url = ""
        self.database: Database | None = None
        self.app: FastAPI | None = None

    def start(self, within: float = 60.0) -> str:
        """Start serving; returns the base URL (http://127.0.0.1:port)."""
        self._thread.start()
        if not self._started.wait(within):
            raise AssertionError(f"the server did not start within {within}s")
        if self._failure is not None:
            raise self._failure
        return self.base_url

    def run(self, coro: Coroutine[Any, Any, T], within: float = 60.0) -> T:
        """Run `coro` on the server's loop (where its database lives) and return its result."""
        assert self._loop is not None, "start() first"
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(within)

    def stop(self, within: float = 60.0) -> None:
        """Stop uvicorn, the lifespan and the database; wait for the thread."""
        if self._thread.is_alive() and self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(within)
        if self._thread.is_alive():
            raise AssertionError(f"the server did not stop within {within}s")
        if self._failure is not None:
            raise self._failure  # a failure while serving or stopping is the test's to see

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to start(); the thread has no one else to tell
            self._failure = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        database = Database.from_url(self._database_url, pool_size=10)
        try:
            await migrate.upgrade(database)
            self.database = database
            async with (
                running_app(database, self._tmp_path, **self._overrides) as app,
                serving(app) as host,
            ):
                self.app = app
                self.base_url = f"http://{host}"
                self._started.set()
                await self._stopping.wait()
        finally:
            await database.close()
