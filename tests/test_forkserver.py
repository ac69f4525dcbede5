"""The fork server (tests/support/forkserver.py): a forked `fleetcore` command is the command.

Every process test relies on it, so it is held to what a fresh interpreter does: the same
answer on the same streams, the working directory and environment it was given, its own
pid for signals, and the exit a signal gives. Each comparison runs the command both ways.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.postgres import free_port
from tests.support.wait import wait_until_sync

CORPUS = Path(__file__).parent / "data" / "dex"
pytestmark = pytest.mark.skipif(
    os.environ.get("FLEETCORE_TEST_FORKS") == "0", reason="FLEETCORE_TEST_FORKS=0: no fork server"
)


def _both(args: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[object, object]:
    """What `args` answers (code, stdout, stderr) as a fresh process and as a forked one."""
    fresh = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
    forked = forkserver.run(args, capture_output=True, text=True, timeout=60, cwd=cwd, env=env)
    return (
        (fresh.returncode, fresh.stdout, fresh.stderr),
        (forked.returncode, forked.stdout, forked.stderr),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["no-such-command"],
        ["dex", "parse", "missing.dex"],
        ["dex", "parse", "--json", "audit.dex"],  # a relative path: the working directory
        ["serve", "--role", "worker"],  # refused on SQLite, naming the environment's setting
    ],
    ids=["version", "unknown", "missing", "relative", "environment"],
)
def test_a_forked_command_answers_as_a_fresh_one(tmp_path: Path, args: list[str]) -> None:
    shutil.copy(next(CORPUS.glob("*.dex")), tmp_path / "audit.dex")
    env = fleetcore_env(FLEETCORE_DATA_DIR=str(tmp_path / "data"), COLUMNS="120")
    fresh, forked = _both([FLEETCORE, *args], cwd=tmp_path, env=env)
    assert forked == fresh


def test_input_reaches_the_command_and_an_argv_error_exits_as_python_does() -> None:
    # `fleetcore admin create-superuser` prompts for what is missing; end-of-input aborts.
    args = [FLEETCORE, "admin", "create-superuser"]
    fresh = subprocess.run(
        args, input="", capture_output=True, text=True, env=fleetcore_env(), check=False
    )
    forked = forkserver.run(args, input="", capture_output=True, text=True, env=fleetcore_env())
    assert fresh.returncode != 0
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )


@contextmanager
def _serving(data_dir: Path, *, fresh: bool = False) -> Iterator[tuple[forkserver.Process, str]]:
    """`fleetcore serve` (forked, or a fresh interpreter) until it answers /health; killed
    at the end whatever the test did."""
    port = free_port()
    start = subprocess.Popen if fresh else forkserver.popen
    process = start(
        [FLEETCORE, "serve", "--port", str(port), "--mqtt-port", str(free_port())],
        env=fleetcore_env(FLEETCORE_DATA_DIR=str(data_dir), FLEETCORE_SHUTDOWN_GRACE_S="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    health = f"http://127.0.0.1:{port}/health"
    try:
        assert isinstance(process, subprocess.Popen if fresh else forkserver.ForkedProcess)

        def up() -> bool:
            assert process.poll() is None, "fleetcore serve exited"
            return _answers(health)

        wait_until_sync(up, within=60, every=0.05)
        yield process, health
    finally:
        process.kill()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _state(pid: int) -> str | None:
    """The process's state letter, None once it is gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: read while it was being reaped
        return None


def test_the_pid_is_the_server_itself(tmp_path: Path) -> None:
    with _serving(tmp_path) as (process, health):
        os.kill(process.pid, signal.SIGSTOP)  # stopped, it cannot answer
        try:
            assert not _answers(health)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert _answers(health)
        assert process.poll() is None  # a stopped command is not an ended one


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["interrupt", "kill"])
def test_a_signal_ends_the_server_as_it_ends_a_fresh_one(
    tmp_path: Path, sig: signal.Signals
) -> None:
    codes = []
    for fresh in (False, True):
        with _serving(tmp_path / str(fresh), fresh=fresh) as (process, _health):
            process.send_signal(sig)
            codes.append(process.wait(timeout=30))
            assert _state(process.pid) is None  # reaped: nothing left behind
    assert codes[0] == codes[1]
    if sig == signal.SIGKILL:
        assert codes[0] == -signal.SIGKILL


def test_a_killed_stand_in_takes_its_command_with_it(tmp_path: Path) -> None:
    with _serving(tmp_path) as (process, _health):
        assert isinstance(process, forkserver.ForkedProcess)
        stand_in = process._stand_in
        stand_in.kill()
        stand_in.wait(timeout=30)
        wait_until_sync(lambda: _state(process.pid) is None, within=30)


# A test process that ends without any clean-up (os._exit, as a killed test worker would).
_ABANDONING = """
import os, subprocess, sys
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
port, data_dir = sys.argv[1], sys.argv[2]
server = forkserver.popen(
    [FLEETCORE, "serve", "--port", port, "--mqtt-port", "0"],
    env=fleetcore_env(FLEETCORE_DATA_DIR=data_dir),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
print(server.pid, flush=True)
sys.stdin.readline()
os._exit(0)
"""


def test_commands_end_with_the_test_process_that_started_them(tmp_path: Path) -> None:
    port = free_port()
    owner = subprocess.Popen(
        [sys.executable, "-c", _ABANDONING, str(port), str(tmp_path)],
        cwd=forkserver.ROOT,
        env=fleetcore_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdin is not None
    assert owner.stdout is not None
    pid = int(owner.stdout.readline())
    try:
        wait_until_sync(lambda: _answers(f"http://127.0.0.1:{port}/health"), within=60)
        owner.stdin.write("go\n")  # the owner ends, without a word to its fork server
        owner.stdin.close()
        assert owner.wait(timeout=30) == 0
        wait_until_sync(lambda: _state(pid) in (None, "Z"), within=30)
    finally:
        owner.stdout.close()
        if _state(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)


def test_what_a_fork_cannot_give_starts_fresh(tmp_path: Path) -> None:
    process = forkserver.popen(
        [FLEETCORE, "--version"], start_new_session=True, stdout=subprocess.PIPE
    )
    assert isinstance(process, subprocess.Popen)
    assert process.communicate(timeout=60)[0].startswith(b"fleetcore ")
    other = forkserver.popen(
        [FLEETCORE, "--version"],
        env={**fleetcore_env(), "PYTHONHASHSEED": "1"},
        stdout=subprocess.PIPE,
    )
    assert isinstance(other, subprocess.Popen)
    assert other.communicate(timeout=60)[0].startswith(b"fleetcore ")
