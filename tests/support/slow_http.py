"""A misbehaving HTTP receiver on a real socket: it trickles its answer a byte at a time,
never answers, or answers 200 with a huge body. It records what it saw."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["trickle", "silent", "huge"]
HUGE_BYTES = 64 * 1024 * 1024  # more than socket buffers hold: written only if read


@dataclass
class SlowReceiver:
    """Listens on 127.0.0.1 (a free port) until stopped; `url` is where to POST."""

    mode: Mode
    every_s: float = 0.05  # between trickled bytes
    requests: int = 0  # requests read whole
    hanging: int = 0  # connections being answered now
    body_bytes_sent: int = 0  # of the huge body, handed to the socket
    sent_whole: bool = False  # the huge body was all taken by the client
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """Where to POST."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        """Stop listening and drop every connection (their senders see it closed)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._read_request(reader)
            self.hanging += 1
            try:
                await self._answer(writer)
            finally:
                self.hanging -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client.set()
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        self.requests += 1

    async def _answer(self, writer: asyncio.StreamWriter) -> None:
        if self.mode == "silent":
            await asyncio.Event().wait()  # until stopped
        if self.mode == "trickle":
            # A status line and then a header that never ends, a byte at a time: each read
            # gets something well within any per-read timeout.
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: ":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.every_s)
            while True:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(self.every_s)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % HUGE_BYTES)
        chunk = b"x" * 65536
        while self.body_bytes_sent < HUGE_BYTES:  # as fast as the client takes it
            writer.write(chunk)
            await writer.drain()
            self.body_bytes_sent += len(chunk)
        self.sent_whole = True
