"""Ingest -> WebSocket latency with 1,000 subscribed clients, through a real `fleetcore serve`.

Setup as an operator would (CLI + REST API, SQLite). 1,000 WebSocket clients, in two
processes of their own, subscribe to one device's telemetry; a device posts a reading every
200 ms whose value is its send time (epoch ms). Each client records now - value for every
message. Latency = HTTP request sent -> committed -> pushed -> received by the client.
Target: p99 under 100 ms.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx
import orjson
from tests.support.postgres import free_port
from websockets.asyncio.client import connect

from bench.telemetry_http import ADMIN, PASSWORD, PATH, ROOT, _cli, _env, provision, serving

CLIENTS = 1_000
CLIENT_PROCESSES = 2
SECONDS = 10.0
INTERVAL_S = 0.2  # 5 readings/s: 5,000 WebSocket messages/s to 1,000 clients
TARGET_P99_MS = 100.0


async def _subscribers(
    port: int, token: str, device_id: str, count: int, ready: Queue[int], out: Queue[Any], stop: Any
) -> None:
    latencies: list[float] = []
    lagged = 0
    done = asyncio.Event()

    async def one() -> None:
        nonlocal lagged
        async with connect(f"ws://127.0.0.1:{port}/api/v1/ws?token={token}", max_queue=None) as ws:
            await ws.send(
                orjson.dumps(
                    {"type": "subscribe", "channel": "telemetry", "device_id": device_id}
                ).decode()
            )
            await ws.recv()
            ready.put(1)
            while not done.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 1)
                except TimeoutError:
                    continue
                now = time.time() * 1000
                message = orjson.loads(raw)
                if message["type"] == "lagged":
                    lagged += message["skipped"]
                elif message["type"] == "telemetry":
                    latencies.append(now - message["values"]["sent"])

    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(0.002)  # no thundering herd of handshakes
    # until the publisher is done and the last messages had time to arrive
    await asyncio.to_thread(stop.wait)
    done.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put({"latencies": latencies, "lagged": lagged})


def _subscriber_main(
    port: int, token: str, device_id: str, count: int, ready: Queue[int], out: Queue[Any], stop: Any
) -> None:
    asyncio.run(_subscribers(port, token, device_id, count, ready, out, stop))


async def _publish(port: int, device_token: str) -> int:
    sent = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            body = {"ts": int(time.time() * 1000), "values": {"sent": time.time() * 1000}}
            answer = await http.post(PATH, headers={"X-Device-Token": device_token}, json=body)
            answer.raise_for_status()
            sent += 1
            await asyncio.sleep(INTERVAL_S)
    return sent


async def _setup(port: int) -> tuple[str, str, str]:
    tokens = await provision(port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        login = await http.post("/api/v1/auth/login", json={"email": ADMIN, "password": PASSWORD})
        login.raise_for_status()
        me = await http.get("/api/v1/devices/me", headers={"X-Device-Token": tokens[0]})
        me.raise_for_status()
        return login.json()["access_token"], tokens[0], me.json()["id"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def run() -> dict[str, Any]:
    """Start the server, connect the subscribers, publish, report the latency percentiles."""
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(FLEETCORE_DATA_DIR=str(Path(tmp) / "live"))
        _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
        port = free_port()
        with serving(env, port, Path(tmp) / "serve.log"):
            access, device_token, device_id = asyncio.run(_setup(port))
            context = multiprocessing.get_context("spawn")
            ready: Queue[int] = context.Queue()
            out: Queue[Any] = context.Queue()
            stop = context.Event()
            share = CLIENTS // CLIENT_PROCESSES
            workers = [
                context.Process(
                    target=_subscriber_main,
                    args=(port, access, device_id, share, ready, out, stop),
                )
                for _ in range(CLIENT_PROCESSES)
            ]
            for worker in workers:
                worker.start()
            for _ in range(share * CLIENT_PROCESSES):
                ready.get(timeout=120)
            sent = asyncio.run(_publish(port, device_token))
            time.sleep(3)
            stop.set()
            results = [out.get(timeout=120) for _ in workers]
            for worker in workers:
                worker.join(timeout=30)
    latencies = [v for r in results for v in r["latencies"]]
    expected = sent * share * CLIENT_PROCESSES
    p99 = _percentile(latencies, 0.99)
    return {
        "name": "live_latency",
        "clients": share * CLIENT_PROCESSES,
        "messages_published": sent,
        "messages_expected": expected,
        "messages_received": len(latencies),
        "lagged_skipped": sum(r["lagged"] for r in results),
        "latency_ms": {
            "p50": _percentile(latencies, 0.50),
            "p90": _percentile(latencies, 0.90),
            "p99": p99,
            "max": round(max(latencies), 1),
            "mean": round(statistics.fmean(latencies), 1),
        },
        "target": {"p99_ms": TARGET_P99_MS, "met": p99 < TARGET_P99_MS},
        "note": (
            "loopback; one server process, SQLite; subscribers in 2 processes and the "
            "publisher share the 2 cores; latency = HTTP send -> commit -> push -> receive"
        ),
    }
