"""The real platform (`fleetcore serve` subprocess) and real agents (`fleetcore-agent run`
subprocesses), plus a TCP proxy a test can cut, for the agent's end-to-end proofs."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from fleetcore.db import Database
from fleetcore.demo import DEMO_EMAIL, ensure_demo
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.http_clients import local_client
from tests.support.postgres import free_port
from tests.support.wait import wait_until

BIN = Path(sys.executable).parent
AGENT = str(BIN / "fleetcore-agent")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anyone's FLEETCORE_* settings."""
    env = fleetcore_env()
    env.update(extra)
    return env


class Platform:
    """`fleetcore serve` on a SQLite file with the embedded broker, on fixed free ports."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.env = env  # extra FLEETCORE_* settings of the serving process
        self.port = free_port()
        self.mqtt_port = free_port()
        self.process: forkserver.Process | None = None
        self.password = ""
        self.log = data_dir / "serve.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def prepare(self) -> None:
        """Migrate the database and make the demo admin (whose password we keep)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database.from_url(f"sqlite+aiosqlite:///{self.data_dir / 'fleetcore.db'}")
        try:
            self.password = (await ensure_demo(database)).password
        finally:
            await database.close()

    async def start(self) -> None:
        """Start serving and wait until /ready says yes."""
        with self.log.open("ab") as log:
            self.process = forkserver.popen(
                [FLEETCORE, "serve", "--port", str(self.port), "--mqtt-port", str(self.mqtt_port)],
                env=clean_env(
                    FLEETCORE_DATA_DIR=str(self.data_dir),
                    FLEETCORE_SHUTDOWN_GRACE_S="1",
                    **self.env,
                ),
                stdout=log,
                stderr=log,
            )
        process = self.process

        async def ready() -> bool:
            assert process.poll() is None, self.log.read_text()[-3000:]
            try:
                async with local_client() as http:
                    return (await http.get(f"{self.base}/ready", timeout=1)).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, within=60, every=0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    async def admin_headers(self) -> dict[str, str]:
        async with local_client(base_url=self.base) as http:
            login = await http.post(
                "/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": self.password}
            )
            assert login.status_code == 200, login.text
            return {"Authorization": f"Bearer {login.json()['access_token']}"}

    async def new_device(self) -> tuple[str, str]:
        """A device without a profile (any key accepted): (id, token)."""
        headers = await self.admin_headers()
        async with local_client(base_url=self.base) as http:
            body = {"name": "agent", "serial_number": f"A-{time.monotonic_ns()}"}
            made = await http.post("/api/v1/devices", headers=headers, json=body)
            assert made.status_code == 201, made.text
            return str(made.json()["id"]), str(made.json()["access_token"])

    def stored(self, key: str = "seq") -> list[float]:
        """Every stored value of a numeric key (all devices), straight from the database."""
        with closing(sqlite3.connect(self.data_dir / "fleetcore.db", timeout=30)) as db:
            rows = db.execute(
                "SELECT n.value FROM ts_num n JOIN ts_series s ON s.id = n.series_id "
                "JOIN ts_keys k ON k.id = s.key_id WHERE k.name = ?",
                (key,),
            ).fetchall()
        return [float(r[0]) for r in rows]


class Proxy:
    """A TCP proxy to a port that a test can cut (refuses and breaks connections) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Nobody can connect, and every open connection breaks."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        if listener is not None:
            listener.close()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class AgentProcess:
    """One `fleetcore-agent` configuration and the process running it (if any)."""

    config_path: Path
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self, *command: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [AGENT, *(command or ("run",)), "--config", str(self.config_path)],
                env=clean_env(),
                stdout=log,
                stderr=log,
            )
        return self.process

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            self.process.wait(timeout=30)

    def meta(self, name: str) -> int:
        """A counter of the agent's queue (produced, dropped, ...), read from its file."""
        path = self.data_dir / "queue.sqlite3"
        if not path.exists():
            return 0
        with closing(sqlite3.connect(path, timeout=30)) as db, suppress(sqlite3.OperationalError):
            row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            return int(row[0]) if row else 0
        return 0

    def backlog(self) -> int:
        path = self.data_dir / "queue.sqlite3"
        with closing(sqlite3.connect(path, timeout=30)) as db:
            return int(db.execute("SELECT count(*) FROM queue").fetchone()[0])

    async def drain(self) -> None:
        """Stop it (SIGTERM), then `fleetcore-agent drain` until its queue is empty."""
        self.signal(signal.SIGTERM)
        drainer = self.start("drain")
        await wait_until(lambda: drainer.poll() is not None, within=60, every=0.1)
        assert drainer.returncode == 0, self.log.read_text()[-3000:]


def agent_config(
    tmp: Path, name: str, *, device_id: str, token: str, mqtt_port: int, **settings: Any
) -> AgentProcess:
    """Write an agent config (a fast, numbered stream unless told otherwise)."""
    data_dir = tmp / name
    values: dict[str, Any] = {
        "device_id": device_id,
        "token": token,
        "mqtt_url": f"mqtt://127.0.0.1:{mqtt_port}",
        "data_dir": str(data_dir),
        "interval_s": 0.02,
        "sequence": True,
        "sensors": [{"type": "simulated", "name": "m", "options": {"keys": ["temperature"]}}],
        "backoff_min_s": 0.05,
        "backoff_max_s": 0.5,
        "ack_timeout_s": 5,
        "keepalive_s": 5,
        "health_interval_s": 1,
        **settings,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return AgentProcess(path, data_dir)


def assert_exactly_once(platform: Platform, agent: AgentProcess) -> int:
    """Stored readings equal produced ones: each seq 1..N once, nothing else."""
    produced = agent.meta("produced")
    stored = platform.stored("seq")
    assert produced > 0
    missing = set(range(1, produced + 1)) - {int(v) for v in stored}
    assert not missing, f"lost {len(missing)} of {produced}: {sorted(missing)[:20]}"
    assert len(stored) == len(set(stored)) == produced, (len(stored), produced)
    return produced


@contextmanager
def running(*things: Platform | AgentProcess | Proxy) -> Iterator[None]:
    """Stop every process and proxy at the end, whatever happened."""
    try:
        yield
    finally:
        for thing in things:
            if isinstance(thing, Proxy):
                thing.cut()
            elif isinstance(thing, Platform):
                thing.stop()
            else:
                thing.signal(signal.SIGKILL)
