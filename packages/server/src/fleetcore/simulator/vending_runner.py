"""Run simulated vending machines against a platform: each uploads its DEX audits over HTTP.

Time runs `speed` times faster for the customers than for the platform: a read made after
4 simulated hours is sent 4 h / speed later, and the times in the file are those of the
real clock at that moment (a machine's clock is real; only its customers are quick), so
the platform never sees a read from the future.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.text import Text

from fleetcore.simulator.vending import Odd, OddRates, Read, VendingMachine
from fleetcore.simulator.vending_fleet import SimMachine

DEX_PATH = "/api/v1/devices/me/dex"
RETRY_S = 2.0  # an upload the platform could not take (503, no answer) is retried once after


@dataclass(slots=True)
class DexStats:
    """Uploads counted across the fleet."""

    reads: int = 0  # audits the machines made
    sent: int = 0  # uploads (a duplicate read is uploaded twice)
    stored: int = 0  # audits the platform stored
    duplicates: int = 0  # uploads it already had
    damaged: int = 0  # stored, but held as damaged
    refused: int = 0  # answered 4xx/5xx or not at all
    odd: dict[str, int] = field(default_factory=dict)
    last_error: str = ""


def wall_now() -> datetime:
    """Now, UTC, to the second, without zone (as DEX files write times)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


class VendingSimulation:
    """Machines selling in simulated time and uploading their reads, until stopped."""

    def __init__(
        self,
        machines: Sequence[SimMachine],
        *,
        http_url: str,
        speed: float,
        seed: int = 0,
        odd: OddRates | None = None,
        start: datetime | None = None,
        models: Sequence[VendingMachine] | None = None,
    ) -> None:
        self.machines, self.http_url, self.speed = machines, http_url, speed
        self.start = start or wall_now()
        # `models` continues machines already run (the demo's history); else new ones.
        self.models = list(models) if models is not None else [
            VendingMachine(m.plan, start=self.start, seed=seed, odd=odd or OddRates())
            for m in machines
        ]  # fmt: skip
        self.stats = DexStats()
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    async def run(self, duration: float | None = None) -> DexStats:
        """Run until `stop` is set or `duration` seconds pass; returns the counts."""
        self.started = time.monotonic()
        wall_start = wall_now()
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as http:
            tasks = [
                asyncio.create_task(self._machine(http, machine, model, wall_start))
                for machine, model in zip(self.machines, self.models, strict=True)
            ]
            try:
                if duration is None:
                    await self.stop.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), duration)
            finally:
                self.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        return self.stats

    def _clock(self, sim_start: datetime, wall_start: datetime) -> Callable[[datetime], datetime]:
        def stamp(sim: datetime) -> datetime:
            offset = (sim - sim_start).total_seconds() / self.speed
            return wall_start + timedelta(seconds=max(0.0, offset))

        return stamp

    async def _machine(
        self,
        http: httpx.AsyncClient,
        machine: SimMachine,
        model: VendingMachine,
        wall_start: datetime,
    ) -> None:
        loop = asyncio.get_running_loop()
        sim_start, real_start = model.next_read_at, loop.time()
        stamp = self._clock(sim_start, wall_start)
        while not self.stop.is_set():
            due = real_start + (model.next_read_at - sim_start).total_seconds() / self.speed
            if (delay := due - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    return
            read = model.next_read(stamp=stamp)
            self.stats.reads += 1
            if read.odd is not None:
                self.stats.odd[read.odd.value] = self.stats.odd.get(read.odd.value, 0) + 1
            await self._upload(http, machine, read)
            if read.odd is Odd.DUPLICATE:
                await self._upload(http, machine, read)

    async def _upload(self, http: httpx.AsyncClient, machine: SimMachine, read: Read) -> None:
        headers = {"X-Device-Token": machine.token, "Content-Type": "application/octet-stream"}
        for attempt in range(2):
            self.stats.sent += 1
            try:
                answer = await http.post(DEX_PATH, content=read.data, headers=headers)
            except httpx.HTTPError as exc:
                self.stats.last_error, retry = f"{machine.plan.serial}: {exc!r}", True
            else:
                if answer.is_success:
                    self._count(answer.json())
                    return
                self.stats.last_error = (
                    f"{machine.plan.serial}: {answer.status_code} {answer.text[:200]}"
                )
                retry = answer.status_code == 503  # a 4xx would not change on a retry
            if not retry or attempt == 1 or self.stop.is_set():
                self.stats.refused += 1
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), RETRY_S)

    def _count(self, body: dict[str, Any]) -> None:
        self.stats.stored += int(body.get("stored", 0))
        self.stats.duplicates += int(body.get("duplicates", 0))
        self.stats.damaged += sum(1 for a in body.get("audits", []) if a.get("status") == "damaged")


def status_text(simulation: VendingSimulation) -> str:
    """`machines · reads · stored · duplicates · damaged · refused · simulated time`."""
    stats = simulation.stats
    clock = max((m.clock for m in simulation.models), default=simulation.start)
    simulated = (clock - simulation.start).total_seconds() / 3600
    line = (
        f"{len(simulation.machines)} machines · reads {stats.reads:,} · sent {stats.sent:,} · "
        f"stored {stats.stored:,} · duplicates {stats.duplicates:,} · damaged "
        f"{stats.damaged:,} · refused {stats.refused:,} · {simulated:,.1f} simulated h · "
        f"{time.monotonic() - simulation.started:,.0f} s"
    )
    odd = ", ".join(f"{k} {v}" for k, v in sorted(stats.odd.items()))
    return f"{line} · odd reads: {odd or 'none'}"


async def show_status(simulation: VendingSimulation, console: Console, done: asyncio.Event) -> None:
    """Redraw the status line a few times a second until `done` is set."""
    with Live(Text(status_text(simulation)), console=console, refresh_per_second=4) as live:
        while not done.is_set():
            live.update(Text(status_text(simulation)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.25)
        live.update(Text(status_text(simulation)))
    if not console.is_terminal:  # rich ends the line itself only on a terminal
        console.line()
