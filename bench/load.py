"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (loopback only)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Requests completed, elapsed seconds, latency percentiles in ms."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


async def _worker(
    host: str, port: int, request: bytes, stop_at: float, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < stop_at:
            begin = time.perf_counter()
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if not headers.startswith(b"HTTP/1.1 2"):
                raise RuntimeError(headers.split(b"\r\n", 1)[0].decode())
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - begin)
    finally:
        writer.close()


async def run_load(
    host: str, port: int, path: str, *, connections: int = 32, seconds: float = 3.0
) -> LoadResult:
    """GET `path` over `connections` keep-alive connections for `seconds`."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    latencies: list[float] = []
    begin = time.perf_counter()
    stop_at = begin + seconds
    await asyncio.gather(
        *(_worker(host, port, request, stop_at, latencies) for _ in range(connections))
    )
    elapsed = time.perf_counter() - begin
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[int(len(latencies) * 0.99)] * 1000,
    )
