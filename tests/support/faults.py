"""Fault injection against real processes: a `fleetcore serve` subprocess that can be killed
and restarted on the same database, devices made through that database, what storage holds
read straight from it, and a small filesystem that can be filled."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import signal
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from sqlalchemy import func, select

from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.devices import service as devices
from fleetcore.devices.models import DeviceProfile
from fleetcore.telemetry.models import LATEST, ROLLUP_1H, ROLLUP_1M, Series, TelemetryKey
from fleetcore.telemetry.models import VALUE_TABLES as _VALUES
from fleetcore_protocol.telemetry import Kind
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.postgres import free_port
from tests.support.wait import wait_until

KEY = "seq"  # every fault test sends numbered readings of this key


class ServerProcess:
    """`fleetcore serve` on fixed free ports, so a restarted server keeps its addresses."""

    def __init__(
        self,
        workdir: Path,
        *,
        data_dir: Path | None = None,
        database_url: str | None = None,
        **settings: str,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir or workdir / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.log = workdir / "serve.log"
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.data_dir / 'fleetcore.db'}"
        self.port, self.mqtt_port = free_port(), free_port()
        self.process: forkserver.Process | None = None
        env = fleetcore_env(
            FLEETCORE_DATA_DIR=str(self.data_dir),
            FLEETCORE_DATABASE_URL=self.database_url,
            FLEETCORE_LOG_LEVEL="warning",
            FLEETCORE_SHUTDOWN_GRACE_S="1",
        )
        env.update({f"FLEETCORE_{name.upper()}": value for name, value in settings.items()})
        self.env = env

    @property
    def base(self) -> str:
        """The HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        """Start serving and wait until /ready says yes."""
        with self.log.open("ab") as sink:
            self.process = forkserver.popen(
                [FLEETCORE, "serve", "--port", str(self.port), "--mqtt-port", str(self.mqtt_port)],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        await wait_until(self.ready, within=60, every=0.1)

    async def ready(self) -> bool:
        """True when /ready answers 200 (fails at once if the process has died)."""
        assert self.alive, f"fleetcore serve exited:\n{self.log_tail()}"
        try:
            async with local_client() as http:
                return (await http.get(f"{self.base}/ready", timeout=5)).status_code == 200
        except httpx.TransportError:
            return False

    async def healthy(self) -> bool:
        """/health answers 200."""
        async with local_client() as http:
            return (await http.get(f"{self.base}/health", timeout=5)).status_code == 200

    @property
    def alive(self) -> bool:
        """The process is running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no goodbye to anyone."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL if it does not stop); the event loop keeps running
        meanwhile, for what the server talks to through it (a proxy in this process)."""
        if not self.alive:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 30)
        except subprocess.TimeoutExpired:
            self.kill()

    async def metric(self, name: str) -> float:
        """The value of an unlabelled metric on /metrics."""
        async with local_client() as http:
            text = (await http.get(f"{self.base}/metrics", timeout=5)).text
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def events(self) -> list[str]:
        """The `event` of every JSON log line the server wrote."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                found.append(str(json.loads(line)["event"]))
        return found

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output, for failure messages."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass(frozen=True, slots=True)
class FaultDevice:
    """A device and its token."""

    id: uuid.UUID
    token: str


async def provision(database_url: str, count: int) -> list[FaultDevice]:
    """Migrate the database and make an organization with `count` devices whose profile
    accepts any key and puts no MQTT rate limit in the way."""
    database = Database.from_url(database_url, pool_size=2)
    try:
        await migrate.upgrade(database)
        async with database.session() as session:
            slug = f"faults-{uuid.uuid4().hex[:8]}"
            org = await users.create_organization(
                session, None, data=OrganizationIn(name=slug, slug=slug)
            )
            profile = DeviceProfile(
                organization_id=org.id,
                name="faults",
                telemetry_keys=[],
                mqtt_rate_per_s=10_000.0,
                mqtt_burst=100_000,
            )
            session.add(profile)
            await session.flush()
            made = []
            for index in range(count):
                device, token = devices.new_device(
                    org.id,
                    name=f"fault-{index}",
                    serial_number=f"F-{index}",
                    profile_id=profile.id,
                )
                session.add(device)
                made.append(FaultDevice(device.id, token))
            await session.commit()
            return made
    finally:
        await database.close()


@dataclass
class Storage:
    """What the database holds of KEY, per device."""

    rows: Counter[tuple[uuid.UUID, int]] = field(default_factory=Counter)  # (device, ts)
    rollup_1m: Counter[uuid.UUID] = field(default_factory=Counter)  # device -> sum(cnt)
    rollup_1h: Counter[uuid.UUID] = field(default_factory=Counter)
    latest: dict[uuid.UUID, int] = field(default_factory=dict)  # device -> latest ts


async def read_storage(database_url: str) -> Storage:
    """Every stored reading of KEY, its roll-up counts and latest time, per device."""
    database = Database.from_url(database_url, pool_size=1)
    series = (
        select(Series.id, Series.device_id)
        .join(TelemetryKey, TelemetryKey.id == Series.key_id)
        .where(TelemetryKey.name == KEY, TelemetryKey.kind == int(Kind.NUMBER))
        .subquery()
    )
    values = _VALUES[Kind.NUMBER]
    storage = Storage()
    try:
        async with database.connect() as plain:
            # One snapshot for every query, even while the server is writing (a SQLite read
            # transaction is one already).
            pg = database.dialect == "postgresql"
            options = {"isolation_level": "REPEATABLE READ"} if pg else {}
            connection = await plain.execution_options(**options)
            await connection.begin()
            rows = await connection.execute(
                select(series.c.device_id, values.c.ts).join(
                    values, values.c.series_id == series.c.id
                )
            )
            storage.rows.update((device, int(ts)) for device, ts in rows)
            for table, counts in ((ROLLUP_1M, storage.rollup_1m), (ROLLUP_1H, storage.rollup_1h)):
                sums = await connection.execute(
                    select(series.c.device_id, func.sum(table.c.cnt))
                    .join(table, table.c.series_id == series.c.id)
                    .group_by(series.c.device_id)
                )
                counts.update({device: int(total) for device, total in sums})
            latest = await connection.execute(
                select(series.c.device_id, LATEST.c.ts).join(
                    LATEST, LATEST.c.series_id == series.c.id
                )
            )
            storage.latest = {device: int(ts) for device, ts in latest}
    finally:
        await database.close()
    return storage


def integrity(path: Path) -> str:
    """SQLite's PRAGMA integrity_check of the file at `path` ("ok" when sound)."""
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        return "; ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))


@contextmanager
def small_filesystem(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MiB mounted at `path` (unmounted afterwards, even if busy)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)


def fill(path: Path) -> int:
    """Write zeros to `path` until the filesystem is full; returns the bytes written."""
    size, written = 65536, 0
    with path.open("wb", buffering=0) as sink:
        while True:
            try:
                written += sink.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if size == 1:
                    return written
                size = max(1, size // 16)  # the last few blocks too
