"""Drive a fleet: every device on its own schedule, the fleet at a total rate of readings/s.

Each device sends a message of its channels' readings every `interval` seconds, jittered
by ±JITTER so the fleet does not beat in step; the interval is chosen so that the whole
fleet sends `rate` readings per second. A device whose schedule fell behind (a slow
answer, a busy loop) catches up, but never by more than one interval's worth at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import httpx

from fleetcore.simulator.links import HttpLink, Link, MqttLink, Stats
from fleetcore.simulator.provision import SimDevice
from fleetcore.simulator.signals import CHANNELS, FaultRates, SignalModel, kind_of

JITTER = 0.2
DRAIN_S = 10.0  # at most, waiting for the acknowledgements of what is in flight at the end
RECONNECT_S = 2.0


class Transport(StrEnum):
    """How the simulated devices reach the platform."""

    MQTT = "mqtt"
    HTTP = "http"


@dataclass(frozen=True, slots=True)
class Target:
    """Where the platform listens: its HTTP base URL and its MQTT broker."""

    http_url: str = "http://127.0.0.1:8000"
    mqtt_url: str = "mqtt://127.0.0.1:1883"

    @property
    def mqtt_host_port(self) -> tuple[str, int]:
        """Host and port of `mqtt_url` (port 1883 when absent)."""
        parts = urlsplit(self.mqtt_url if "//" in self.mqtt_url else f"mqtt://{self.mqtt_url}")
        return parts.hostname or "127.0.0.1", parts.port or 1883


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a run: counts, the achieved rate, and the connections that failed."""

    stats: Stats
    seconds: float
    unacked: int
    refused: list[str]

    @property
    def achieved_per_s(self) -> float:
        """Acknowledged readings per second over the run."""
        return self.stats.acked / self.seconds if self.seconds else 0.0


def readings_per_round(count: int) -> int:
    """Readings in one message from each of the first `count` devices of a fleet."""
    return sum(len(CHANNELS[kind_of(i)]) for i in range(1, count + 1))


def message_interval(devices: Sequence[SimDevice], rate: float) -> float:
    """Seconds between two messages of one device so the fleet sends `rate` readings/s."""
    readings_per_round = sum(len(CHANNELS[d.kind]) for d in devices)
    return readings_per_round / rate


class Simulation:
    """A fleet of simulated devices, run until stopped or for a duration."""

    def __init__(
        self,
        devices: Sequence[SimDevice],
        *,
        rate: float,
        transport: Transport,
        target: Target,
        seed: int = 0,
        faults: FaultRates | None = None,
    ) -> None:
        self.devices, self.rate, self.transport, self.target = devices, rate, transport, target
        self.seed = seed
        self.faults = faults or FaultRates()
        self.interval = message_interval(devices, rate)
        self.stats = Stats()
        self.started = time.monotonic()
        self.stop = asyncio.Event()

    async def run(
        self, duration: float | None = None, on_start: Callable[[], None] | None = None
    ) -> Outcome:
        """Connect every device, send until `stop` is set or `duration` passes, drain."""
        http = httpx.AsyncClient(
            base_url=self.target.http_url,
            timeout=30,
            limits=httpx.Limits(max_connections=len(self.devices), max_keepalive_connections=None),
        )
        try:
            links, refused = await self._open(http)
            if on_start is not None:
                on_start()
            self.started = time.monotonic()
            tasks = [
                asyncio.create_task(self._device(d, links[d.id]))
                for d in self.devices
                if d.id in links
            ]
            try:
                if not links:  # nothing could connect: nothing to wait for
                    pass
                elif duration is None:
                    await self.stop.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), duration)
            finally:
                self.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            seconds = time.monotonic() - self.started
            await self._drain()
            unacked = self.stats.pending
            await asyncio.gather(*(link.close() for link in links.values()))
            return Outcome(self.stats, seconds, unacked, refused)
        finally:
            await http.aclose()

    async def _open(self, http: httpx.AsyncClient) -> tuple[dict[object, Link], list[str]]:
        """A link per device; MQTT devices connect, a few at a time."""
        links: dict[object, Link] = {}
        refused: list[str] = []
        host, port = self.target.mqtt_host_port
        if self.transport is Transport.HTTP:
            try:
                (await http.get("/health")).raise_for_status()
            except httpx.HTTPError as exc:
                problem = f"{self.target.http_url} does not answer: {exc!r}"
                return {}, [problem] * len(self.devices)
        gate = asyncio.Semaphore(20)

        async def open_one(device: SimDevice) -> None:
            link: Link
            if self.transport is Transport.MQTT:
                link = MqttLink(device, host, port, self.stats)
            else:
                link = HttpLink(device, http, self.stats)
            async with gate:
                try:
                    await link.open()
                except (ConnectionError, TimeoutError) as exc:
                    refused.append(str(exc) or device.name)
                    await link.close()
                    return
            links[device.id] = link

        await asyncio.gather(*(open_one(d) for d in self.devices))
        return links, refused

    async def _device(self, device: SimDevice, link: Link) -> None:
        """One device's schedule: sample, send, wait for the next (jittered) slot."""
        loop = asyncio.get_running_loop()
        rnd = random.Random(f"{self.seed}:{device.index}:schedule")  # noqa: S311
        model = SignalModel(
            device.kind, seed=self.seed * 1_000_003 + device.index, faults=self.faults
        )
        due = loop.time() + rnd.uniform(0, self.interval)  # spread the fleet's first messages
        last_ts = 0
        while not self.stop.is_set():
            delay = due - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    return
            due = max(due, loop.time() - self.interval) + self.interval * rnd.uniform(
                1 - JITTER, 1 + JITTER
            )
            ts = max(int(time.time() * 1000), last_ts + 1)  # never the same (device, ts) twice
            last_ts = ts
            sample = model.sample(ts / 1000)
            self.stats.samples += 1
            if sample.fault is not None:
                self.stats.faults[sample.fault] = self.stats.faults.get(sample.fault, 0) + 1
            if not sample.values:
                continue
            if not link.ready:
                self.stats.errors += len(sample.values)  # offline: the reading is lost
                if isinstance(link, MqttLink):
                    await link.reconnect()
                    due = max(due, loop.time() + RECONNECT_S)
                continue
            await link.send(ts, sample.values)

    async def _drain(self) -> None:
        """Wait (up to DRAIN_S) for the acknowledgements of what is still in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_S
        while loop.time() < deadline:
            if self.stats.pending <= 0:
                return
            await asyncio.sleep(0.05)
