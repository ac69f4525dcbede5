"""`fleetcore simulate --kind camera`: gate cameras sending plate reads with their images.

Cameras (devices LPR-0001…, profile "Gate cameras") are made or reused through the database,
like the other simulated fleets; a reused camera gets a fresh token. The reads go over HTTP,
one multipart request each (the read's JSON and its JPEG), at a total rate for the fleet;
a share of them are plates of the simulated watchlist, so its alerts show on /alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx
import structlog
import typer
from sqlalchemy import select

from fleetcore.config import Settings
from fleetcore.db import Database
from fleetcore.simulator.cameras import EVENTS_PATH, CameraStream, wanted_plates
from fleetcore.simulator.provision import (
    ensure_devices,
    ensure_organization,
    ensure_profile,
    record_provisioning,
)

PROFILE = "Gate cameras"
LABEL = "simulated-camera"
NAME_PREFIX = "LPR-"
RETRY_S = 2.0
WATCHLIST = "Wanted vehicles"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SimCamera:
    """A provisioned camera and its token (kept in memory only)."""

    index: int
    device_id: uuid.UUID
    name: str
    token: str


@dataclass(frozen=True, slots=True)
class CameraFleet:
    """What provisioning made or found."""

    organization_id: uuid.UUID
    profile_id: uuid.UUID
    cameras: list[SimCamera]
    created: int
    reused: int


def camera_name(index: int) -> str:
    """The name and serial number of camera number `index` (1-based)."""
    return f"{NAME_PREFIX}{index:04d}"


async def provision_cameras(
    database: Database, *, organization: str, count: int, names: Sequence[str] = ()
) -> CameraFleet:
    """Create or reuse `count` cameras (and the organization and profile, if absent); a new
    camera is named from `names` in order, else after its serial number."""
    async with database.session(write=True) as session:
        org = await ensure_organization(session, organization)
        profile, _ = await ensure_profile(
            session,
            org.id,
            PROFILE,
            description="Licence-plate cameras at gates (fleetcore simulate --kind camera)",
            telemetry_keys=[],
        )
        made = await ensure_devices(
            session,
            org.id,
            [camera_name(i) for i in range(1, count + 1)],
            profile_id=profile.id,
            label=LABEL,
            properties=lambda _index: {"simulated": "camera"},
            names=names,
        )
        cameras = [
            SimCamera(index, one.device.id, one.device.name, one.token)
            for index, one in enumerate(made, start=1)
        ]
        created, reused = record_provisioning(
            session,
            made,
            action="simulator.provision",
            organization_id=org.id,
            target_type="device_profile",
            target_id=profile.id,
        )
        await session.commit()
        return CameraFleet(org.id, profile.id, cameras, created, reused)


async def ensure_watchlist(
    database: Database, organization_id: uuid.UUID, name: str, plate_texts: list[str]
) -> str | None:
    """The organization's watchlist `name` holding `plate_texts` (made, or completed, in the name
    of one of its admins, so the audit trail names a person); None when it has no admin."""
    from fleetcore.auth.models import User
    from fleetcore.auth.principal import Principal, PrincipalKind, Role
    from fleetcore.plates import service as plates
    from fleetcore.plates.models import Watchlist
    from fleetcore.plates.schemas import EntryIn, WatchlistIn

    async with database.session(write=True) as session:
        admin = await session.scalar(
            select(User)
            .where(
                User.organization_id == organization_id,
                User.role == Role.ADMIN.value,
                User.is_active.is_(True),
            )
            .order_by(User.email)
            .limit(1)
        )
        if admin is None:
            return None
        actor = Principal(
            kind=PrincipalKind.USER,
            subject_id=admin.id,
            organization_id=organization_id,
            role=Role.ADMIN,
        )
        watchlist_id = await session.scalar(
            select(Watchlist.id).where(
                Watchlist.organization_id == organization_id, Watchlist.name == name
            )
        )
        if watchlist_id is None:
            made = await plates.create_watchlist(
                session,
                actor,
                data=WatchlistIn(
                    name=name,
                    description="Plates the simulated cameras see now and then",
                    min_confidence=0.8,
                ),
            )
            watchlist_id = made.id
        # Plates the list holds already come back as duplicates: nothing changes.
        await plates.add_entries(
            session, actor, watchlist_id, [EntryIn(plate=p, note="simulated") for p in plate_texts]
        )
        return name


@dataclass(slots=True)
class CameraStats:
    """What the cameras sent and how the platform answered."""

    sent: int = 0
    stored: int = 0
    refused: int = 0  # a 4xx: the read will not be accepted as it is
    failed: int = 0  # no answer or a 5xx/429: tried again later
    image_bytes: int = 0
    last_error: str = ""
    by_status: dict[int, int] = field(default_factory=dict)


class CameraSimulation:
    """Each camera reads a vehicle every `len(cameras) / rate` seconds (jittered)."""

    def __init__(
        self,
        cameras: list[SimCamera],
        *,
        http_url: str,
        rate: float,
        seed: int = 0,
        wanted_share: float = 0.1,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.cameras = cameras
        self.http_url = http_url
        self.interval = len(cameras) / rate
        self.streams = [
            CameraStream(camera.name, seed=seed * 1_000 + camera.index, wanted_share=wanted_share)
            for camera in cameras
        ]
        self.rng = random.Random(seed)  # noqa: S311 (a simulation, not a secret)
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.stats = CameraStats()
        self.stop = asyncio.Event()

    async def run(self, duration: float | None = None) -> CameraStats:
        """Send until `stop` is set or `duration` seconds passed."""
        async with httpx.AsyncClient(base_url=self.http_url, timeout=30) as http:
            tasks = [
                asyncio.create_task(self._camera(http, camera, stream))
                for camera, stream in zip(self.cameras, self.streams, strict=True)
            ]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), duration)
            self.stop.set()
            await asyncio.gather(*tasks)
        return self.stats

    async def _camera(
        self, http: httpx.AsyncClient, camera: SimCamera, stream: CameraStream
    ) -> None:
        # Start spread over one interval so the cameras do not send in step.
        if await self._wait(self.rng.uniform(0, self.interval)):
            return
        while not self.stop.is_set():
            read = await asyncio.to_thread(stream.next, self.clock())
            await send_read(
                http, camera.token, read.multipart(), len(read.jpeg), self.stats, self.stop
            )
            if await self._wait(self.interval * self.rng.uniform(0.8, 1.2)):
                return

    async def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` unless stopped first; True if stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()


async def send_read(
    http: httpx.AsyncClient,
    token: str,
    files: dict[str, tuple[str | None, bytes, str]],
    image_bytes: int,
    stats: CameraStats,
    stop: asyncio.Event,
    *,
    retries: int = 2,
) -> bool:
    """Post one read with its image; True once stored. A 4xx is final, the rest is tried
    again after RETRY_S, unless `stop` is set meanwhile (a stopping demo must not hold its
    server's shutdown on a retry)."""
    stats.sent += 1
    for attempt in range(retries + 1):
        try:
            answer = await http.post(EVENTS_PATH, headers={"X-Device-Token": token}, files=files)
        except httpx.HTTPError as exc:
            stats.failed += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"
        else:
            stats.by_status[answer.status_code] = stats.by_status.get(answer.status_code, 0) + 1
            if answer.is_success:
                stats.stored += 1
                stats.image_bytes += image_bytes
                return True
            stats.last_error = f"HTTP {answer.status_code}: {answer.text[:200]}"
            if answer.status_code < 500 and answer.status_code != 429:
                stats.refused += 1
                log.warning("camera_read_refused", status=answer.status_code)
                return False
            stats.failed += 1
        if attempt == retries:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_S)
        if stop.is_set():
            break
    return False


def simulate_cameras(
    settings: Settings,
    *,
    organization: str,
    count: int,
    http_url: str,
    rate: float,
    duration: float | None,
    seed: int,
) -> None:
    """Provision (or reuse) `count` cameras and send reads until Ctrl-C or `duration`."""
    from fleetcore.errors import DomainError

    try:
        fleet, watchlist = asyncio.run(_provision(settings, organization, count))
    except DomainError as exc:
        typer.echo(f"fleetcore: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{len(fleet.cameras)} cameras in organization {organization!r} ({fleet.created} "
        f"created, {fleet.reused} reused); plate reads with images over HTTP to {http_url} "
        f"at {rate:g} reads/s"
    )
    if watchlist is None:
        typer.echo(
            f"The organization has no admin, so no watchlist was made: add the plates "
            f"{', '.join(wanted_plates())} to one to see alerts on /alerts."
        )
    else:
        typer.echo(f"Watchlist {watchlist!r} holds {', '.join(wanted_plates())}.")
    stats = asyncio.run(_run(fleet, http_url, rate, duration, seed))
    typer.echo(
        f"reads {stats.sent:,} · stored {stats.stored:,} · refused {stats.refused:,} · "
        f"failed tries {stats.failed:,} · images {stats.image_bytes / 1e6:,.1f} MB"
    )
    if stats.sent and not stats.stored:
        typer.echo(
            f"fleetcore: no read was accepted: {stats.last_error}\n"
            "(the server at --url must use the database these settings name: "
            "FLEETCORE_DATA_DIR or FLEETCORE_DATABASE_URL)",
            err=True,
        )
        raise typer.Exit(1)


async def _provision(
    settings: Settings, organization: str, count: int
) -> tuple[CameraFleet, str | None]:
    from fleetcore.migrate import upgrade

    database = Database.from_url(settings.resolved_database_url, pool_size=2)
    try:
        if settings.migrate_on_start:  # as `serve` would before writing
            await upgrade(database)
        fleet = await provision_cameras(database, organization=organization, count=count)
        watchlist = await ensure_watchlist(
            database, fleet.organization_id, WATCHLIST, wanted_plates()
        )
        return fleet, watchlist
    finally:
        await database.close()


async def _run(
    fleet: CameraFleet, http_url: str, rate: float, duration: float | None, seed: int
) -> CameraStats:
    from fleetcore.simulator.cli import stop_on_signals

    simulation = CameraSimulation(fleet.cameras, http_url=http_url, rate=rate, seed=seed)
    stop_on_signals(simulation)
    return await simulation.run(duration)
