"""A throwaway PostgreSQL server in a temporary directory, started and stopped by the tests."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

DEFAULT_BINDIR = Path("/usr/lib/postgresql/15/bin")


# Ports for the servers tests start, below the kernel's ephemeral range (32768-60999 here):
# a port taken with bind(0) comes from that range, and any outgoing connection of another
# test process could be given it as its source port before our server binds it (CI saw
# "address already in use"). Each pytest-xdist worker gets a slice of its own.
_PORTS_FROM, _SLICE = 20_000, 1_500
_next_port = itertools.count()


def _slice_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    index = int(worker) if worker.isdigit() else 0
    return _PORTS_FROM + (index % 8) * _SLICE


def free_port() -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range."""
    start = _slice_start()
    for _ in range(_SLICE):
        port = start + next(_next_port) % _SLICE
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use (or lingering): the next one
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + _SLICE - 1}")


class PostgresServer:
    """initdb + pg_ctl in a temp dir; as root it runs as an unprivileged user."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or Path(os.environ.get("FLEETCORE_TEST_PG_BINDIR", DEFAULT_BINDIR))
        if not (self.bindir / "initdb").exists():
            raise RuntimeError(
                f"PostgreSQL binaries not found in {self.bindir}; run `make test` "
                "(installs postgresql-15) or set FLEETCORE_TEST_PG_BINDIR"
            )
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="fleetcore-pg-"))
        self.data = self.root / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, args: Sequence[str]) -> None:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if result.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command} failed: {result.stderr}{result.stdout}\n{tail}")

    def start(self) -> str:
        """Start the server; returns an asyncpg URL to a fresh database."""
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "fleetcore",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self.resume()
        return self.create_database("fleetcore_test")

    def resume(self) -> None:
        """Start the (initialized) server again, on the same port and data."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.root / "server.log"),
                "-w",
                "start",
            ]
        )

    def halt(self, mode: str = "fast") -> None:
        """Stop the server, keeping its data (`resume` starts it again): `fast` ends every
        session and checkpoints, `immediate` is a crash."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def url(self, database: str) -> str:
        """An asyncpg URL to `database` on this server."""
        return f"postgresql+asyncpg://fleetcore@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create another empty database; returns its URL."""
        self._run(
            [
                str(self.bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "fleetcore",
                name,
            ]
        )
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and delete its files."""
        try:
            if (self.data / "postmaster.pid").exists():  # not halted
                self._run(
                    [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# A test that runs on PostgreSQL alone (several processes, row locks): the session's backend
# fixture, parametrized indirectly, so only the PostgreSQL item is collected.
PG_ONLY = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
