"""The fork server process of tests/support/forkserver.py (run as `python -m` this module).

It imports every `fleetcore` module once, then forks a child for each stand-in that connects
to its socket; the child becomes `fleetcore ARGV` with the stand-in's streams, environment and
working directory, and exits as that process would. The server tells the stand-in the child's
pid, then how it ended; a stand-in that goes away (killed) takes its child with it, and at the
end of the server's stdin (the test process has ended) every child is killed.

Single-threaded (a fork of a process with threads is not safe): one selector over the
listening socket, each stand-in's connection, each child's pidfd and stdin.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import os
import pkgutil
import random
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any


def _preload() -> None:
    """Import what `fleetcore` commands import, as they would (collection off while importing,
    as `fleetcore serve` does), then freeze it: forked children share it and never scan it."""
    gc.disable()
    import fleetcore
    import fleetcore.cli
    import fleetcore.server

    for module in pkgutil.walk_packages(fleetcore.__path__, "fleetcore."):
        if module.name.endswith("__main__"):
            continue
        try:
            __import__(module.name)
        except Exception:  # noqa: S112 (the command imports it itself and meets the error)
            continue
    gc.collect()
    gc.freeze()
    gc.enable()
    if threading.active_count() != 1:  # forking a process with threads is not safe
        raise SystemExit(f"a preloaded module started a thread: {threading.enumerate()}")


def _read_request(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A stand-in's request (length-prefixed JSON) and the streams that came with it."""
    data, fds, _flags, _address = socket.recv_fds(connection, 1 << 16, 3)
    try:
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            more = connection.recv(1 << 16)
            if not more:
                raise ConnectionError("the stand-in went away mid-request")
            data += more
        return json.loads(data[4:]), fds
    except BaseException:
        for fd in fds:  # not this server's to keep
            os.close(fd)
        raise


def _run_command(request: dict[str, Any], fds: list[int], inherited: list[Any]) -> None:
    """In the forked child: become `fleetcore ARGV` and exit as its process would."""
    code = 70
    try:
        for resource in inherited:  # the server's socket, selector, connections and pidfds
            if isinstance(resource, int):
                os.close(resource)
            else:
                resource.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        random.seed()  # each process its own random sequence, as a fresh one would have
        if "numpy.random" in sys.modules:
            sys.modules["numpy.random"].seed()
        sys.argv = list(request["argv"])
        # The script's directory leads the import path, as for `python SCRIPT` (the fork
        # server's own, the repository root, must not: a command could import the tests).
        sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0]))
        code = _exit_code_of(sys.argv[0])
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(code)


def _exit_code_of(script: str) -> int:
    """Run `script` as `__main__` and end as the interpreter would: the exit code."""
    try:
        runpy.run_path(script, run_name="__main__")
        code: object = 0
    except SystemExit as exit:
        code = exit.code
    except KeyboardInterrupt:
        _finish()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)  # as CPython ends on an uncaught Ctrl-C
        code = 130
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _finish()
    return code & 0xFF


def _finish() -> None:
    """What the interpreter does at exit, before tearing itself down."""
    threading._shutdown()  # type: ignore[attr-defined] # joins non-daemon threads
    atexit._run_exitfuncs()


class _Forks:
    """What the server has forked, for whom, and the selector that watches it all."""

    def __init__(self, path: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", 0))
        self.selector.register(0, selectors.EVENT_READ, ("parent", 0))
        # pid -> the stand-in's connection (None once it has gone) and the child's pidfd
        self.children: dict[int, tuple[socket.socket | None, int]] = {}

    def serve(self) -> None:
        """Until the test process ends (end of stdin)."""
        while True:
            for key, _events in self.selector.select():
                kind, pid = key.data
                if kind == "parent":
                    if not os.read(0, 4096):
                        for child in self.children:
                            os.kill(child, signal.SIGKILL)
                        return
                elif kind == "accept":
                    self._fork()
                elif kind == "exit":
                    self._ended(pid)
                elif kind == "stand-in":
                    self._stand_in_gone(pid)

    def _fork(self) -> None:
        connection, _address = self.listener.accept()
        try:
            request, fds = _read_request(connection)
        except (ConnectionError, ValueError):
            connection.close()
            return
        sys.stdout.flush()  # nothing of the server's buffered for the child to write
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            others = [r for c, fd in self.children.values() for r in (c, fd) if r is not None]
            _run_command(request, fds, [self.selector, self.listener, connection, *others])
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.children[pid] = (connection, pidfd)
        self.selector.register(connection, selectors.EVENT_READ, ("stand-in", pid))
        self.selector.register(pidfd, selectors.EVENT_READ, ("exit", pid))
        try:
            connection.sendall(f"{pid}\n".encode())
        except OSError:
            os.kill(pid, signal.SIGKILL)

    def _ended(self, pid: int) -> None:
        """The child has ended: reap it and tell its stand-in how."""
        _pid, status = os.waitpid(pid, 0)
        stand_in, pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        if stand_in is not None:
            self.selector.unregister(stand_in)
            with contextlib.suppress(OSError):
                stand_in.sendall(f"{status}\n".encode())
            stand_in.close()

    def _stand_in_gone(self, pid: int) -> None:
        """The stand-in's connection is readable: it only ever closes (killed), and so goes
        its command."""
        stand_in, pidfd = self.children[pid]
        assert stand_in is not None
        if not stand_in.recv(1):
            self.selector.unregister(stand_in)
            stand_in.close()
            self.children[pid] = (None, pidfd)
            os.kill(pid, signal.SIGKILL)


def serve(path: str) -> None:
    """Fork a `fleetcore` command for each stand-in that connects to `path`."""
    _preload()
    forks = _Forks(path)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    forks.serve()


if __name__ == "__main__":
    serve(sys.argv[1])
