"""A TCP proxy (asyncio) in front of a database: it delays every chunk of data by a set
latency, each way and in order (a slow network, not a narrow one), and can hold all data
(a database that stops answering without closing anything)."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.postgres import free_port


class LatencyProxy:
    """Listens on `port`, forwards to `target_port`; `delay_s` may change at any time."""

    def __init__(self, target_port: int, *, delay_s: float = 0.0) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = free_port()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Accept connections."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def hold(self) -> None:
        """Stop delivering anything (connections stay open): a database that hangs."""
        self._flowing.clear()

    def release(self) -> None:
        """Deliver again, everything held first."""
        self._flowing.set()

    async def stop(self) -> None:
        """Close the listener and every connection."""
        self.release()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Forward each chunk `delay_s` after it arrived, keeping their order."""
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    return
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)  # the latency being simulated
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while data := await source.read(65536):
                line.put_nowait((loop.time() + self.delay_s, data))
        except OSError:
            pass
        finally:
            line.put_nowait((loop.time(), b""))
            with contextlib.suppress(OSError):
                await delivery
            with contextlib.suppress(OSError, RuntimeError):
                sink.write_eof()
