"""Which package a device's MQTT chunk requests download, remembered per (device, request id).

ThingsBoard firmware asks for a package in many chunks under one request id. Looking the
assignment up for every chunk (the device's shared attributes, then the package: about
40 ms a chunk on SQLite) held MQTT downloads to about 1.5 MB/s; as ThingsBoard's transport
does, the package resolved at a request's first chunk now serves its later chunks.

Bounded in size (least recently used out first) and in time (TTL_S). An entry is dropped at
once when the device's shared attributes change in this process (a new assignment; an abort
or a rollback restores what the device had), and every entry when a rollout is paused,
resumed, aborted or rolled back or a package deleted here: the next chunk resolves the
assignment again and is refused if there is none. A change made by another process (an API
process beside ingest processes on PostgreSQL) is seen within TTL_S.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fleetcore.attributes import signals

MAX_ENTRIES = 4096
TTL_S = 5.0  # another process's abort reaches this one's downloads within it

_caches: weakref.WeakSet[ChunkCache] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a package's bytes are (what a chunk needs of its row)."""

    storage_prefix: str
    part_bytes: int
    size: int


@dataclass(frozen=True, slots=True)
class _Entry:
    resolved: Resolved
    expires: float


Key = tuple[uuid.UUID, str, str]  # device, kind, request id


class ChunkCache:
    """The packages of recent chunk requests, by (device, kind, request id)."""

    def __init__(
        self,
        *,
        max_entries: int = MAX_ENTRIES,
        ttl_s: float = TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self.hits = 0  # chunks answered without a look-up (tests and benchmarks read it)
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        # Moves with every invalidation: a look-up that began before one is not remembered.
        self.generation = 0
        _caches.add(self)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Resolved | None:
        """The package remembered for this request, if still fresh."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.resolved

    def put(self, key: Key, resolved: Resolved, *, generation: int) -> None:
        """Remember a request's package, unless an invalidation came after `generation`."""
        if generation != self.generation:
            return
        self._entries[key] = _Entry(resolved, self.clock() + self.ttl_s)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_device(self, device_id: uuid.UUID) -> None:
        """Drop the device's requests (its assignment may have changed)."""
        self.generation += 1
        for key in [key for key in self._entries if key[0] == device_id]:
            del self._entries[key]

    def clear(self) -> None:
        """Drop every request."""
        self.generation += 1
        self._entries.clear()


def assignments_changed() -> None:
    """After a committed rollout move or package deletion: every request resolves again."""
    for cache in list(_caches):
        cache.clear()


def _shared_changed(change: signals.SharedChange) -> None:
    if change.scope == "shared":
        for cache in list(_caches):
            cache.forget_device(change.device_id)


# One listener for the process (the after-commit notices are process-wide too).
signals.listen(_shared_changed)
