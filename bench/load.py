"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (loopback only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Builds the n-th request of connection c: (c, n) -> the request's bytes.
RequestFactory = Callable[[int, int], bytes]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Requests answered 2xx, elapsed seconds, their latency percentiles in ms, other answers."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int] = field(default_factory=dict)  # status line -> count
    p95_ms: float = float("nan")

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


async def _worker(
    host: str,
    port: int,
    connection: int,
    make: RequestFactory,
    stop_at: float,
    latencies: list[float],
    errors: dict[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sequence = 0
    try:
        while time.perf_counter() < stop_at:
            request = make(connection, sequence)
            sequence += 1
            begin = time.perf_counter()
            writer.write(request)
            headers = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if not headers.startswith(b"HTTP/1.1 2"):
                status = headers.split(b"\r\n", 1)[0].decode()
                errors[status] = errors.get(status, 0) + 1
                continue
            latencies.append(time.perf_counter() - begin)
    finally:
        writer.close()


async def run_requests(
    host: str, port: int, make: RequestFactory, *, connections: int = 32, seconds: float = 3.0
) -> LoadResult:
    """Send `make(connection, n)` over `connections` keep-alive connections for `seconds`."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    begin = time.perf_counter()
    stop_at = begin + seconds
    await asyncio.gather(
        *(_worker(host, port, c, make, stop_at, latencies, errors) for c in range(connections))
    )
    elapsed = time.perf_counter() - begin
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=_percentile(latencies, 0.5),
        p99_ms=_percentile(latencies, 0.99),
        errors=errors,
        p95_ms=_percentile(latencies, 0.95),
    )


def _percentile(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted seconds, in ms (NaN when nothing was answered 2xx)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def run_load(
    host: str, port: int, path: str, *, connections: int = 32, seconds: float = 3.0
) -> LoadResult:
    """GET `path` over `connections` keep-alive connections for `seconds`."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    return await run_requests(
        host, port, lambda _c, _n: request, connections=connections, seconds=seconds
    )


def post_head(
    host: str, path: str, headers: dict[str, str], content_type: str = "application/json"
) -> bytes:
    """Request line and headers of a POST, without Content-Length and the blank line."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n").encode()


def post_request(head: bytes, body: bytes) -> bytes:
    """A whole keep-alive POST: `head` from post_head, then the body."""
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
