"""The camera side of `make run`: three gate cameras, their plate reads, a watchlist.

The cameras and the "Wanted vehicles" watchlist (the simulator's wanted plates) are made before
the server starts; the reads go once the server answers (DemoCamerasRun), through the device
route as the cameras themselves would send them, each with its image: first a history (the
last three hours, once per data directory: cameras that have reads are not filled again), then
with `live` a read every few seconds until the server stops. So /plates has thumbnails,
searches and visits to show, and /alerts the watchlist's hits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import structlog
from sqlalchemy import func, select

from fleetcore.db import Database
from fleetcore.events.models import DeviceEvent
from fleetcore.simulator.camera_fleet import (
    WATCHLIST,
    CameraFleet,
    CameraStats,
    SimCamera,
    ensure_watchlist,
    provision_cameras,
    send_read,
)
from fleetcore.simulator.cameras import CameraStream, wanted_plates

DEMO_CAMERAS = 3
CAMERA_NAMES = ("gate-1-in", "gate-1-out", "car-park-b")  # the reads' `camera` field
DEVICE_NAMES = ("Gate 1 entry camera", "Gate 1 exit camera", "Car park B camera")
HISTORY_READS = 36  # per camera, spread over HISTORY_MS
HISTORY_MS = 3 * 3_600_000
IN_VIEW_MS = 3_000  # a vehicle still in view is read again this much later
LIVE_EVERY_S = 6.0  # live: one read from one of the cameras this often

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DemoCameras:
    """The demo's cameras (tokens in memory only) and its watchlist's name."""

    fleet: CameraFleet
    watchlist: str | None


async def ensure_demo_cameras(database: Database, *, organization: str) -> DemoCameras:
    """The cameras of the demo organization, made or reused (fresh tokens), and the
    watchlist of the simulator's wanted plates."""
    fleet = await provision_cameras(
        database, organization=organization, count=DEMO_CAMERAS, names=DEVICE_NAMES
    )
    watchlist = await ensure_watchlist(database, fleet.organization_id, WATCHLIST, wanted_plates())
    return DemoCameras(fleet, watchlist)


async def _cameras_with_reads(database: Database, cameras: list[SimCamera]) -> set[str]:
    async with database.session() as session:
        rows = await session.execute(
            select(DeviceEvent.device_id, func.count())
            .where(
                DeviceEvent.device_id.in_([c.device_id for c in cameras]),
                DeviceEvent.type == "plate_read",
            )
            .group_by(DeviceEvent.device_id)
        )
        return {str(device_id) for device_id, count in rows if count}


class DemoCamerasRun:
    """`serve --demo`'s cameras once the server answers: the history, then (with `live`)
    a read every LIVE_EVERY_S seconds, round robin, until `stop` is set."""

    def __init__(
        self,
        demo: DemoCameras,
        *,
        open_database: Callable[[], Database],
        http_url: str,
        live: bool,
    ) -> None:
        self.demo, self.open_database = demo, open_database
        self.http_url, self.live = http_url, live
        self.stop = asyncio.Event()
        self.stats = CameraStats()
        cameras = demo.fleet.cameras
        self.streams = [
            CameraStream(CAMERA_NAMES[i % len(CAMERA_NAMES)], seed=100 + i, wanted_share=0.08)
            for i in range(len(cameras))
        ]

    async def run(self) -> None:
        """Fill, then send until stopped; logs what was sent."""
        cameras = self.demo.fleet.cameras
        database = self.open_database()
        try:
            filled = await _cameras_with_reads(database, cameras)
        finally:
            await database.close()
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as http:
            now = int(time.time() * 1000)
            step = HISTORY_MS // HISTORY_READS
            for camera, stream in zip(cameras, self.streams, strict=True):
                if str(camera.device_id) in filled:
                    continue
                ts = now - HISTORY_MS
                for _ in range(HISTORY_READS):
                    if self.stop.is_set():
                        return
                    ts = await self._send(http, camera, stream, ts, step)
            log.info("cameras demo ready", reads=self.stats.stored)
            turn = 0
            while self.live and not self.stop.is_set():
                index = turn % len(cameras)
                turn += 1
                await self._send(
                    http, cameras[index], self.streams[index], int(time.time() * 1000), 0
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), LIVE_EVERY_S)
        log.info(
            "cameras simulator stopped",
            stored=self.stats.stored,
            refused=self.stats.refused,
            last_error=self.stats.last_error,
        )

    async def _send(
        self, http: httpx.AsyncClient, camera: SimCamera, stream: CameraStream, ts: int, step: int
    ) -> int:
        """Send the camera's next read at `ts`; the next read's time in the history: a few
        seconds later while the same vehicle is in view, else `step` later."""
        read = await asyncio.to_thread(stream.next, ts)
        await send_read(http, camera.token, read.multipart(), len(read.jpeg), self.stats, self.stop)
        return ts + (IN_VIEW_MS if stream.in_view_again() else step)
