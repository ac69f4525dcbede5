"""Where the detectors live: every watched series' SeriesDetector and WearState, with no I/O,
so that they can run in the engine's own process or in a child process of their own.

Judging costs about 6 microseconds a reading in Python; at the embedded server's ingest rate
(tens of thousands of readings a second) that would take a quarter of the process that also
runs the broker and the writer. In a child process (FLEETCORE_ANALYTICS_PROCESS, the
default) the engine's process only ships readings and receives findings, and the operating
system puts the detectors on another core.

The engine talks to a host through a runner: InlineRunner calls it directly, ProcessRunner
calls it in a one-worker process pool. Every call takes and returns plain picklable data.
A child that dies loses only what is also on disk: the engine starts a new one and reloads
the series from their saved state, replaying the stored readings since (engine.py).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from fleetcore.analytics.detect import Sensitivity, SeriesDetector
from fleetcore.analytics.findings import Finding, Reading
from fleetcore.analytics.wear import Estimate, WearConfig, WearState, estimate

SeriesId = tuple[str, str]  # (device id, key)


@dataclass(frozen=True, slots=True)
class Setup:
    """How to start (or continue) one series."""

    sid: SeriesId
    sensitivity: dict[str, Any]
    wear: WearConfig | None
    detector_state: dict[str, Any] | None = None
    wear_state: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Judged:
    """What one series' readings of a call produced; `estimate` only when a wear bucket
    closed (the estimate changed)."""

    sid: SeriesId
    findings: tuple[Finding, ...]
    estimate: Estimate | None


@dataclass(slots=True)
class _Series:
    detector: SeriesDetector
    wear: WearState | None
    wear_config: WearConfig | None
    buckets: int = -1  # closed wear buckets when last estimated


class DetectorHost:
    """The series, by id; each method is one call of the engine."""

    def __init__(self) -> None:
        self.series: dict[SeriesId, _Series] = {}

    def setup(self, items: list[Setup]) -> list[SeriesId]:
        """Start each series from its saved state (afresh when unreadable); the ids that
        could not use their state."""
        fresh: list[SeriesId] = []
        for item in items:
            sens = Sensitivity.from_dict(item.sensitivity)
            detector = None
            wear = None
            if item.detector_state is not None:
                try:
                    detector = SeriesDetector.from_state(item.detector_state, sens)
                    if item.wear is not None and item.wear_state is not None:
                        wear = WearState.from_dict(item.wear_state)
                except (KeyError, TypeError, ValueError, IndexError):
                    detector = wear = None
                    fresh.append(item.sid)
            if detector is None:
                detector = SeriesDetector(item.sid[1], sens)
            if item.wear is not None and wear is None:
                wear = WearState.for_config(item.wear)
            self.series[item.sid] = _Series(detector, wear, item.wear)
        return fresh

    def judge(self, work: list[tuple[SeriesId, list[int], list[float]]]) -> list[Judged]:
        """Observe each series' readings (timestamps and values, in time order); what they
        produced."""
        out: list[Judged] = []
        for sid, stamps, values in work:
            series = self.series.get(sid)
            if series is None:
                continue
            found: list[Finding] = []
            observe = series.detector.observe
            wear = series.wear
            for ts, value in zip(stamps, values, strict=True):
                reading = Reading(ts, float(value))
                found.extend(observe(reading))
                if wear is not None:
                    wear.update(reading)
            result = None
            if wear is not None and series.wear_config is not None:
                closed = len(wear.ring)
                if closed != series.buckets:
                    series.buckets = closed
                    result = estimate(wear, series.wear_config)
            if found or result is not None:
                out.append(Judged(sid, tuple(found), result))
        return out

    def snapshot(
        self, sids: list[SeriesId]
    ) -> list[tuple[SeriesId, dict[str, Any], dict[str, Any] | None]]:
        """The state of each series, to save."""
        return [
            (
                sid,
                self.series[sid].detector.state(),
                None if self.series[sid].wear is None else self.series[sid].wear.to_dict(),  # type: ignore[union-attr]
            )
            for sid in sids
            if sid in self.series
        ]

    def drop(self, sids: list[SeriesId]) -> None:
        """Forget series (their device's settings changed or it is gone)."""
        for sid in sids:
            self.series.pop(sid, None)


class HostLost(Exception):
    """The host's process died: its series must be loaded again."""


class Runner(Protocol):
    """Calls a DetectorHost, wherever it lives."""

    async def call(self, method: str, *args: Any) -> Any: ...

    async def close(self) -> None: ...


class InlineRunner:
    """The host in the engine's own process (tests, and FLEETCORE_ANALYTICS_PROCESS=false)."""

    def __init__(self) -> None:
        self.host = DetectorHost()

    async def call(self, method: str, *args: Any) -> Any:
        """Call the host's method."""
        return getattr(self.host, method)(*args)

    async def close(self) -> None:
        """Nothing to stop."""


_HOST: DetectorHost | None = None  # the child process's host


def _start_child() -> None:
    global _HOST
    _HOST = DetectorHost()


def _call_child(method: str, args: tuple[Any, ...]) -> Any:
    assert _HOST is not None
    return getattr(_HOST, method)(*args)


class ProcessRunner:
    """The host in a child process of its own (started on first use, again if it dies)."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fork of a process running an event loop and threads is not safe.
            self._pool = ProcessPoolExecutor(
                1, mp_context=multiprocessing.get_context("spawn"), initializer=_start_child
            )
        return self._pool

    async def call(self, method: str, *args: Any) -> Any:
        """Call the host's method in the child; HostLost if the child died."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), _call_child, method, args)
        except BrokenProcessPool as error:
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
            raise HostLost(str(error)) from error

    async def close(self) -> None:
        """Stop the child."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    @property
    def pid(self) -> int | None:
        """The child's process id, once started (for tests)."""
        if self._pool is None:
            return None
        processes = list(getattr(self._pool, "_processes", {}).values())
        return processes[0].pid if processes else None
