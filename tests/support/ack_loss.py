"""A TCP proxy in front of PostgreSQL that, once armed, breaks the connection at the next
COMMIT: after the server's answer (the commit done, its acknowledgement lost) or before
the server sees it (nothing committed). Either way the client's commit fails the same way."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.postgres import free_port

# PostgreSQL's simple query message ('Q', length, text): how asyncpg sends COMMIT.
_COMMIT = b"COMMIT"


class AckLosingProxy:
    """Listens on `port`, forwards to `target_port`; `arm()` loses the next COMMIT's answer."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.lost = 0  # commits (or their acknowledgements) lost so far
        self._armed = False
        self._deliver = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def arm(self, *, deliver: bool = True) -> None:
        """Break the connection at the next COMMIT any connection sends; `deliver`: after
        the server committed (the answer lost), else before the server gets it."""
        self._armed = True
        self._deliver = deliver

    async def start(self) -> None:
        """Accept connections."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update((writer, up_writer))
        committing = asyncio.Event()  # this connection's COMMIT is on its way, answer to lose
        pipes = [
            asyncio.create_task(self._up(reader, up_writer, committing)),
            asyncio.create_task(self._down(up_reader, writer, committing)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def _up(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, committing: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if self._armed and data.startswith(b"Q") and _COMMIT in data.upper():
                    self._armed = False
                    if not self._deliver:
                        self.lost += 1
                        return  # never reaches the server: it rolls back
                    committing.set()
                sink.write(data)
                await sink.drain()

    async def _down(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, committing: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if committing.is_set():
                    # The server's answer to COMMIT ('C' CommandComplete ... 'Z'): dropped,
                    # and the client's connection closed. The commit stays done.
                    self.lost += 1
                    return
                sink.write(data)
                await sink.drain()
