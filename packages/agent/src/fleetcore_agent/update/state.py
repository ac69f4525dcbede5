"""The update state the agent reports (sw_state, sw_error), kept in its data directory so
it survives restarts and is reported again at every connect until the platform has it."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fleetcore_agent.update.layout import read_json, write_json

# ThingsBoard's states, in order; FAILED ends any of them.
DOWNLOADING = "DOWNLOADING"
DOWNLOADED = "DOWNLOADED"
VERIFIED = "VERIFIED"
UPDATING = "UPDATING"
UPDATED = "UPDATED"
FAILED = "FAILED"


@dataclass(slots=True)
class UpdateState:
    """The last state of the last update, and the package that failed (not retried)."""

    state: str = ""
    title: str = ""
    version: str = ""
    checksum: str = ""
    error: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # {"version", "checksum"}


class StateFile:
    """UpdateState on disk, written atomically at each change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        raw = read_json(path) or {}
        known = {k: v for k, v in raw.items() if k in UpdateState.__dataclass_fields__}
        self.value = UpdateState(**known)

    def set(self, **changes: Any) -> UpdateState:
        """Change some fields and save."""
        with self._lock:
            for key, value in changes.items():
                setattr(self.value, key, value)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, asdict(self.value))
            return UpdateState(**asdict(self.value))

    def get(self) -> UpdateState:
        """A copy of the current state."""
        with self._lock:
            return UpdateState(**asdict(self.value))
