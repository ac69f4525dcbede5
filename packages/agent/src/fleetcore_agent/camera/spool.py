"""The camera's store and forward: reads in a queue, their images in files, on a budget.

Each event (a plate read, or a camera event) is one entry of a `Store` queue
(`spool_dir/reads.sqlite3`) that never drops anything; a read's image is a file
`spool_dir/images/<entry id>.jpg`, written after the entry (under one lock, so the sender
never sees a read before its image). The images are held to `budget_bytes`: past it the
oldest are deleted and counted, and a `camera_images_dropped` event is queued; their reads
stay and are sent without image. After the platform took a read, its file is deleted.

A crash between the platform's answer and the deletion leaves an image whose entry is gone:
at start, images older than the oldest queued entry are such leftovers and are deleted.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetcore_agent.store import Entry, Store

log = logging.getLogger("fleetcore_agent.camera")

NEVER_DROP = 2**62  # the read queue's budget: reads are never dropped (the images are)


@dataclass(frozen=True, slots=True)
class Queued:
    """One event to send: the queue entry, the event, and whether it had an image."""

    entry: Entry
    event: dict[str, Any]
    has_image: bool


def _now_ms() -> int:
    return int(time.time() * 1000)


class Spool:
    """Queue of events plus image files within a byte budget; thread-safe."""

    def __init__(self, directory: Path, *, budget_bytes: int, fsync: str = "full") -> None:
        self.directory = directory
        self.images = directory / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.fsync = fsync
        self.store = Store(directory / "reads.sqlite3", fsync=fsync, budget_bytes=NEVER_DROP)
        self._lock = threading.Lock()
        self._sending: int | None = None  # the image being uploaded is not dropped under it
        self._counters_path = directory / "counters.json"
        self.counters = self._load_counters()
        self._files: dict[int, int] = {}  # entry id -> image size
        for leftover in self.images.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        oldest = self.store.take(1, fresh_share=0.0)
        self.store.release()
        first = oldest[0].id if oldest else None
        for path in self.images.glob("*.jpg"):
            try:
                entry_id = int(path.stem)
            except ValueError:
                continue
            if first is None or entry_id < first:  # its read was sent: a leftover
                path.unlink(missing_ok=True)
                continue
            self._files[entry_id] = path.stat().st_size

    # Counters that survive restarts -----------------------------------------------------

    def _load_counters(self) -> dict[str, int]:
        counters = {"images_dropped": 0, "rejected": 0}
        try:
            saved = json.loads(self._counters_path.read_text())
        except (OSError, ValueError):
            return counters
        if isinstance(saved, dict):
            for key in counters:
                if isinstance(saved.get(key), int):
                    counters[key] = saved[key]
        return counters

    def _save_counters(self) -> None:
        tmp = self._counters_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.counters))
        os.replace(tmp, self._counters_path)

    # Adding -----------------------------------------------------------------------------

    def add(self, event: dict[str, Any], image: bytes | None = None) -> Entry:
        """Queue an event, with its image when given; drop the oldest images over budget."""
        with self._lock:
            entry = self.store.append(
                {"event": event, "image": image is not None}, now_ms=_now_ms()
            )
            if image is not None:
                self._write(entry.id, image)
                dropped = self._enforce_budget()
                if dropped:
                    self.counters["images_dropped"] += dropped
                    self._save_counters()
                    total = self.counters["images_dropped"]
                    log.warning("camera spool over budget: %d oldest images dropped", dropped)
                    notice = {
                        "type": "camera_images_dropped",
                        "severity": "warning",
                        "ts": _now_ms(),
                        "data": {
                            "count": dropped,
                            "total": total,
                            "budget_bytes": self.budget_bytes,
                        },
                    }
                    self.store.append({"event": notice, "image": False}, now_ms=_now_ms())
            return entry

    def _path(self, entry_id: int) -> Path:
        return self.images / f"{entry_id:012d}.jpg"

    def _write(self, entry_id: int, image: bytes) -> None:
        path = self._path(entry_id)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            out.write(image)
            if self.fsync == "full":
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
        self._files[entry_id] = len(image)

    def _enforce_budget(self) -> int:
        dropped = 0
        used = sum(self._files.values())
        for entry_id in sorted(self._files):
            if used <= self.budget_bytes:
                break
            if entry_id == self._sending:
                continue
            self._path(entry_id).unlink(missing_ok=True)
            used -= self._files.pop(entry_id)
            dropped += 1
        return dropped

    # Sending ----------------------------------------------------------------------------

    def take(self, limit: int) -> list[Queued]:
        """The oldest queued events (in flight until `done` or `release`)."""
        out: list[Queued] = []
        for entry in self.store.take(limit, fresh_share=0.0):
            body = json.loads(entry.body)
            out.append(Queued(entry, dict(body["event"]), bool(body.get("image"))))
        return out

    def image(self, queued: Queued) -> bytes | None:
        """The image of a queued read, or None (it had none, or it was dropped)."""
        with self._lock:
            if queued.entry.id not in self._files:
                return None
            try:
                data = self._path(queued.entry.id).read_bytes()
            except OSError:
                self._files.pop(queued.entry.id, None)
                return None
            self._sending = queued.entry.id
            return data

    def done(self, queued: Queued, *, rejected: bool = False) -> None:
        """The platform took (or refused for good) this event: forget it and its image."""
        with self._lock:
            self.store.remove([queued.entry.id])
            self._path(queued.entry.id).unlink(missing_ok=True)
            self._files.pop(queued.entry.id, None)
            if self._sending == queued.entry.id:
                self._sending = None
            if rejected:
                self.counters["rejected"] += 1
                self._save_counters()

    def release(self) -> None:
        """Nothing more is being sent."""
        with self._lock:
            self._sending = None
        self.store.release()

    def image_bytes(self) -> int:
        """Bytes of images spooled."""
        with self._lock:
            return sum(self._files.values())

    def image_count(self) -> int:
        """Images spooled."""
        with self._lock:
            return len(self._files)

    def backlog(self) -> int:
        """Events queued."""
        return self.store.stats().backlog

    def close(self) -> None:
        """Close the queue file."""
        self.store.close()
