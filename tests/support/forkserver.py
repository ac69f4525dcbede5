"""`fleetcore` commands for the tests, forked from a warm process instead of a fresh interpreter.

Why: the suite starts about a hundred `fleetcore` processes (servers for the fault, topology,
agent and simulator tests; import, export, backup and admin commands). A fresh interpreter
spends about a second of CPU importing Fleetcore's modules before it does anything, and the
suite is CPU-bound on this 2-core machine. A fork server imports them once per test worker
and forks a process for each command, which then runs exactly as `fleetcore ARGS` would: its
own pid, argv, environment, working directory, standard streams, exit code and signals.

How, for one command:
- `popen([FLEETCORE, ...])` starts a stand-in (fork_shim.py, a bare interpreter that starts in
  about 10 ms) with the caller's streams, environment and directory, as subprocess.Popen would.
- The stand-in passes them to the fork server (forkserver_process.py) over a Unix socket (the
  streams as file descriptors). The server forks, and the child runs the `fleetcore` script
  as `__main__`.
- The stand-in exits as the command did. `ForkedProcess` is a subprocess.Popen for the caller:
  its `pid` is the command's, and signals go to the command; waiting, polling and the streams
  are the stand-in's.

What is not the same as a fresh interpreter, and why it does not matter here:
- Python's own start-up settings (PYTHON* variables, hash seed, warnings filters) are the fork
  server's. A command whose PYTHON* variables differ from the test process's, or that asks for
  what a fork cannot give (preexec_fn, a new session, pass_fds), is started fresh instead.
- Modules are already imported, so an import-time warning would print once, in the fork
  server's log, not in each command's stderr.
- /proc/PID/cmdline and /proc/PID/environ show the fork server's; the stand-in's show the
  command's (a leftover command always has its stand-in beside it).

`FLEETCORE_TEST_FORKS=0` in the test process's environment starts every command fresh.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHIM = str(Path(__file__).with_name("fork_shim.py"))
# The command installed beside the interpreter running the tests.
FLEETCORE = str(Path(sys.executable).parent / "fleetcore")
# What a fork cannot give the way a fresh process would get it: such commands start fresh.
_FRESH_ONLY = ("preexec_fn", "start_new_session", "process_group", "pass_fds", "user", "group")


class ForkedProcess:
    """A `fleetcore` command forked by the fork server, used as a subprocess.Popen."""

    def __init__(self, args: Sequence[str], server: str, **popen_kwargs: Any) -> None:
        pid_read, pid_write = os.pipe()
        try:
            self._stand_in: subprocess.Popen[Any] = subprocess.Popen(
                [sys.executable, "-I", "-S", SHIM, server, str(pid_write), *args],
                pass_fds=(pid_write,),
                **popen_kwargs,
            )
        finally:
            os.close(pid_write)
        with os.fdopen(pid_read, "rb") as started:
            pid = started.read()  # the stand-in closes its end once it has written the pid
        if not pid:
            self._stand_in.communicate()
            raise RuntimeError(f"the fork server did not start {list(args)}")
        self.pid = int(pid)
        self.args = list(args)
        self.stdin = self._stand_in.stdin
        self.stdout = self._stand_in.stdout
        self.stderr = self._stand_in.stderr

    @property
    def returncode(self) -> int | None:
        """The command's exit code once it has ended (negative: killed by that signal)."""
        return self._stand_in.returncode

    def poll(self) -> int | None:
        return self._stand_in.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self._stand_in.wait(timeout)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        return self._stand_in.communicate(input, timeout)

    def send_signal(self, sig: int) -> None:
        """Signal the command itself (the stand-in then exits as it does)."""
        if self._stand_in.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> ForkedProcess:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stand_in.__exit__(*exc_info)


Process = ForkedProcess | subprocess.Popen[Any]


def popen(args: Sequence[str], **kwargs: Any) -> Process:
    """subprocess.Popen(args, **kwargs), forked from the fork server when args run `fleetcore`."""
    server = _server_for(args, kwargs)
    if server is None:
        return subprocess.Popen(args, **kwargs)
    return ForkedProcess(args, server, **kwargs)


def run(
    args: Sequence[str],
    *,
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> subprocess.CompletedProcess[Any]:
    """subprocess.run(args, ...), forked from the fork server when args run `fleetcore`."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    with popen(args, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except BaseException:  # a timeout included: the command must not outlive the call
            process.kill()
            process.wait()
            raise
        code = process.poll()
        assert code is not None
    if check and code:
        raise subprocess.CalledProcessError(code, args, stdout, stderr)
    return subprocess.CompletedProcess(args, code, stdout, stderr)


# One fork server per test process, started on first use.

_lock = threading.Lock()
_running: _ForkServer | None = None


class _ForkServer:
    """The fork server process, its socket and its log."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="fleetcore-forks-")
        self.socket = os.path.join(self.directory, "forks")
        self.log = os.path.join(self.directory, "forkserver.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
        with open(self.log, "wb") as log:
            # stdin stays open while this process lives: at its end-of-file, the server and
            # whatever it forked go too.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.forkserver_process", self.socket],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        assert self.process.stdout is not None
        if self.process.stdout.readline() != b"ready\n":
            self.process.wait()
            raise RuntimeError(f"the fork server did not start:\n{Path(self.log).read_text()}")
        self.python_env = _python_env(os.environ)
        atexit.register(self.close)

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.stdout.close()
        self.process.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


def _python_env(env: Any) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PYTHON")}


def _server_for(args: Sequence[str], kwargs: dict[str, Any]) -> str | None:
    """The fork server's socket when this command can be forked, else None (start it fresh)."""
    global _running
    if not args or str(args[0]) != FLEETCORE or os.environ.get("FLEETCORE_TEST_FORKS") == "0":
        return None
    if any(kwargs.get(name) for name in _FRESH_ONLY) or kwargs.get("shell"):
        return None
    with _lock:
        if _running is None:
            _running = _ForkServer()
        server = _running
    env = kwargs.get("env")
    if _python_env(os.environ if env is None else env) != server.python_env:
        return None
    return server.socket
