"""Logs: JSON lines for machines, console lines on a terminal, no migration chatter.

Real processes (`fleetcore serve`, or Python configuring the logging) with their output on a
pipe or on a pseudo-terminal: logging is process-wide state, so it is not configured here.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.postgres import free_port
from tests.support.wait import wait_until_sync

ANSI = re.compile(r"\x1b\[[0-9;]*m")
# ConsoleRenderer: "2026-01-01T00:00:00.000000Z [info     ] event   key=value [logger]"
CONSOLE_LINE = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[(debug|info|warning|error)\s*\] ")
CHATTER = ("Context impl", "Will assume", "Running upgrade", "setup plugin", "HTTP Request:")

SNIPPET = """
import logging, sys, structlog
from fleetcore.logging import configure_logging
configure_logging(sys.argv[1], sys.argv[2])
structlog.get_logger("fleetcore.check").info("hello", n=1)
logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
logging.getLogger("alembic.runtime.migration").warning("alembic_warns")
logging.getLogger("httpx").info("HTTP Request: GET http://example.invalid")
"""


def on_pty(
    argv: list[str], env: dict[str, str], *, until: Callable[[str], bool], within: float = 60
) -> str:
    """Run `argv` with stdout and stderr on a pseudo-terminal; once `until(output)` holds,
    SIGTERM it; return everything it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(argv, env=env, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + within
    stopped = False
    try:
        while True:
            if not stopped and until(b"".join(chunks).decode(errors="replace")):
                process.send_signal(signal.SIGTERM)
                stopped = True
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no end within {within}s:\n{b''.join(chunks)[-3000:]!r}")
            ready, _, _ = select.select([master], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def serve_env(tmp_path: Path, **extra: str) -> tuple[list[str], dict[str, str]]:
    """`fleetcore serve` on a fresh SQLite database (so migrations run) and free ports."""
    env = fleetcore_env(
        FLEETCORE_DATA_DIR=str(tmp_path),
        FLEETCORE_LOG_LEVEL="info",
        FLEETCORE_SHUTDOWN_GRACE_S="1",
        **extra,
    )
    argv = [FLEETCORE, "serve", "--port", str(free_port()), "--mqtt-port", str(free_port())]
    return argv, env


def started(output: str) -> bool:
    """uvicorn has said the application is up."""
    return "Application startup complete" in output


@pytest.mark.parametrize(
    ("fmt", "terminal", "expected"),
    [
        ("auto", False, "json"),
        ("auto", True, "console"),
        ("json", True, "json"),  # an explicit format wins over the terminal
        ("console", False, "console"),
    ],
)
def test_the_format_follows_the_terminal_unless_one_is_named(
    fmt: str, terminal: bool, expected: str
) -> None:
    argv = [sys.executable, "-c", SNIPPET, "info", fmt]
    env = fleetcore_env()
    if terminal:
        output = on_pty(argv, env, until=lambda _: False, within=30)
    else:
        output = subprocess.run(argv, env=env, capture_output=True, check=True, text=True).stderr
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 2, output  # hello and the warning; alembic's and httpx's info are gone
    if expected == "json":
        records = [json.loads(line) for line in lines]
        assert [r["event"] for r in records] == ["hello", "alembic_warns"]
        assert (records[0]["n"], records[0]["logger"]) == (1, "fleetcore.check")
    else:
        plain = [ANSI.sub("", line) for line in lines]
        assert all(CONSOLE_LINE.match(line) for line in plain), plain
        assert " hello " in plain[0]
        assert "n=1" in plain[0]
        assert " alembic_warns " in plain[1]
        # colours only on a terminal
        assert ("\x1b[" in output) is terminal


def test_debug_lets_the_libraries_speak() -> None:
    argv = [sys.executable, "-c", SNIPPET, "debug", "json"]
    output = subprocess.run(argv, env=fleetcore_env(), capture_output=True, check=True, text=True)
    events = [json.loads(line)["event"] for line in output.stderr.splitlines()]
    assert "Context impl SQLiteImpl." in events
    assert "HTTP Request: GET http://example.invalid" in events


def test_serve_off_a_terminal_writes_json_lines_without_migration_chatter(
    tmp_path: Path,
) -> None:
    argv, env = serve_env(tmp_path)
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return started(log.read_text(errors="replace"))

        wait_until_sync(up, within=60, every=0.05, explain=log.read_text)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    output = log.read_text()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    events = [r["event"] for r in records]
    assert "migrations_applied" in events
    assert "started" in events
    assert not [line for line in output.splitlines() if any(c in line for c in CHATTER)]


def test_serve_on_a_terminal_writes_console_lines_without_migration_chatter(
    tmp_path: Path,
) -> None:
    argv, env = serve_env(tmp_path)
    output = on_pty(argv, env, until=started)
    lines = [ANSI.sub("", line) for line in output.splitlines() if line.strip()]
    assert lines
    assert all(CONSOLE_LINE.match(line) for line in lines), lines
    assert any(" migrations_applied " in line for line in lines), lines
    assert any("Application startup complete" in line for line in lines)
    assert not [line for line in lines if any(c in line for c in CHATTER)]
    assert "\x1b[" in output  # coloured
