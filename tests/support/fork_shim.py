"""The stand-in for one `fleetcore` command forked by the fork server (tests/support/forkserver.py).

Run as `python -I -S fork_shim.py SOCKET PID_FD ARGV...`, it starts in about 10 ms: the
standard library only, no site. It hands its argv, environment, working directory and
standard streams to the fork server, writes the forked command's pid to PID_FD, and then
waits, and exits as the command did: the same exit code, or killed by the same signal.

- It keeps none of the streams open once they are handed over, so whoever reads the
  command's output sees end-of-file exactly when the command (and anything it started)
  closes it.
- A signal sent to the stand-in goes on to the command.
- If the stand-in is killed itself, the fork server sees its connection close and kills the
  command, so no command outlives its stand-in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
UNSTARTED = 70  # EX_SOFTWARE: the fork server did not start the command, or went away


def main() -> int:
    path, pid_fd, *argv = sys.argv[1:]
    request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.connect(path)
    socket.send_fds(server, [len(request).to_bytes(4, "big") + request], [0, 1, 2])
    answers = server.makefile("rb")
    started = answers.readline()
    if not started:
        print("fork server: the command was not started", file=sys.stderr)
        return UNSTARTED
    pid = int(started)
    os.write(int(pid_fd), started)
    os.close(int(pid_fd))
    quiet = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(quiet, fd)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for forwarded in FORWARDED:
        signal.signal(forwarded, forward)
    ended = answers.readline()
    if not ended:  # the fork server went away, killing the command: how it ended is unknown
        return UNSTARTED
    code = os.waitstatus_to_exitcode(int(ended))
    if code < 0:  # killed by a signal: be killed by the same one
        signum = -code
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum  # a signal that does not end a process (not sent by the kernel)
    return code


if __name__ == "__main__":
    sys.exit(main())
