"""The versions layout on disk, its atomic switches, and the start guard.

    <root>/versions/<version>/   one virtualenv per installed version
    <root>/current  -> versions/<version>   what the service runs
    <root>/previous -> versions/<version>   what a rollback goes back to
    <root>/wheels/                every wheel installed so far (--find-links for the next)
    <root>/trial.json             written before a switch: the new version is on trial
    <root>/outcome.json           how a trial ended when the new version could not say it

Standard library only, and no import of the rest of the agent: install.sh copies this file
to <root>/guard.py, and the service runs it before every start (systemd ExecStartPre), so
a new version that cannot even import is still rolled back by code that is not its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_STARTS = 3


class Layout:
    """Paths and switches of one agent installation root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = root / "versions"
        self.current = root / "current"
        self.previous = root / "previous"
        self.wheels = root / "wheels"
        self.trial_file = root / "trial.json"
        self.outcome_file = root / "outcome.json"

    def version_dir(self, version: str) -> Path:
        """The virtualenv directory of a version."""
        return self.versions / version

    def target(self, link: Path) -> str | None:
        """The version a link points at (None when missing)."""
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def point(self, link: Path, version: str) -> None:
        """Point `link` at a version atomically: a new symlink renamed over the old one."""
        temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        os.symlink(f"versions/{version}", temporary)
        os.replace(temporary, link)
        _sync_dir(self.root)

    def switch(self, version: str, *, deadline_s: float, max_starts: int) -> None:
        """Make `version` current, the current one previous, and put it on trial."""
        old = self.target(self.current)
        if old is None:
            raise RuntimeError(f"{self.current} does not point at an installed version")
        trial = {
            "version": version,
            "previous": old,
            "switched_at": time.time(),
            "deadline_s": deadline_s,
            "max_starts": max_starts,
            "starts": 0,
        }
        write_json(self.trial_file, trial)  # before the switch: a crash after it is on trial
        self.point(self.previous, old)
        self.point(self.current, version)

    def trial(self) -> dict[str, Any] | None:
        """The trial in progress, if any."""
        return read_json(self.trial_file)

    def passed(self) -> None:
        """The version on trial is good: no more trial."""
        self.trial_file.unlink(missing_ok=True)
        _sync_dir(self.root)

    def roll_back(self, reason: str) -> str | None:
        """Switch back to the version before the trial; record why. Returns that version."""
        trial = self.trial()
        if trial is None:
            return None
        previous = str(trial["previous"])
        self.point(self.current, previous)
        self.point(self.previous, previous)
        write_json(
            self.outcome_file,
            {"version": trial["version"], "state": "FAILED", "error": reason, "at": time.time()},
        )
        self.passed()
        return previous

    def take_outcome(self) -> dict[str, Any] | None:
        """The recorded end of a trial, once (the caller reports it)."""
        outcome = read_json(self.outcome_file)
        self.outcome_file.unlink(missing_ok=True)
        return outcome

    def prune(self) -> list[str]:
        """Remove version directories that are neither current nor previous."""
        keep = {self.target(self.current), self.target(self.previous)}
        removed: list[str] = []
        if not self.versions.is_dir():
            return removed
        for entry in self.versions.iterdir():
            if entry.name not in keep and not entry.name.startswith("."):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


def guard(layout: Layout) -> str:
    """Count a start of a version on trial; roll back once it has failed too often."""
    trial = layout.trial()
    if trial is None:
        return "no trial"
    if layout.target(layout.current) != trial.get("version"):
        layout.passed()  # the switch never happened (or was undone): nothing on trial
        return "stale trial removed"
    starts = int(trial.get("starts", 0)) + 1
    limit = int(trial.get("max_starts", DEFAULT_MAX_STARTS))
    if starts > limit:
        previous = layout.roll_back(
            f"version {trial['version']} did not pass its health check in {limit} starts "
            f"(it crashed or was stopped each time); rolled back to {trial['previous']}"
        )
        return f"rolled back to {previous}"
    write_json(layout.trial_file, {**trial, "starts": starts})
    return f"trial start {starts} of {limit}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when missing or unreadable."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Write a JSON file atomically and durably (temporary file, fsync, rename)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    # A rename is durable only once its directory is: a power cut must not undo a switch.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def main(argv: list[str] | None = None) -> int:
    """`guard.py [--root DIR] [-- COMMAND...]`: guard, then exec COMMAND when given."""
    parser = argparse.ArgumentParser(description="fleetcore-agent start guard")
    parser.add_argument("--root", type=Path, default=Path("/opt/fleetcore-agent"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    print(f"fleetcore-agent guard: {guard(Layout(args.root))}", file=sys.stderr, flush=True)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        os.execv(command[0], command)  # noqa: S606 - the service's own command line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
