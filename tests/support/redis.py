"""A throwaway Redis (Debian's redis-server) on a free loopback port, stopped and started on
demand by the tests (same port across restarts, nothing persisted: a restarted Redis is
empty, as after a real crash without persistence)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postgres import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """redis-server with a generated config in a temp dir."""

    def __init__(self) -> None:
        if not Path(REDIS_SERVER).exists():
            raise RuntimeError("redis-server not found; `make system-deps` installs it")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://127.0.0.1:<port>/0"""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        """The server's log, appended to across restarts."""
        return self.root / "redis.log"

    def start(self) -> None:
        """Start (or restart) the server and wait until it accepts connections."""
        config = self.root / "redis.conf"
        config.write_text(
            f'port {self.port}\nbind 127.0.0.1\ndir {self.root}\nsave ""\nappendonly no\n'
            f"logfile {self.log_path}\ndaemonize no\nprotected-mode yes\n"
        )
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log_path.read_text()[-2000:]}")
            if self.command("PING") == "+PONG":
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start within 15 s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server abruptly (SIGKILL): clients see their connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop and remove the temp dir."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def command(self, *words: str) -> str | None:
        """One inline command's first reply line (None if the server does not answer)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall((" ".join(words) + "\r\n").encode())
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                if reply.startswith(b"$"):  # a bulk string: its body follows the length line
                    length = int(reply.split(b"\r\n", 1)[0][1:])
                    while len(reply.split(b"\r\n", 1)[1]) < length + 2:
                        reply += conn.recv(65536)
                    return reply.split(b"\r\n", 1)[1][:length].decode()
                return reply.decode().strip()
        except OSError:
            return None
