"""Store-and-forward queue: every reading goes to a local SQLite file first.

A reading leaves the queue only when the platform acknowledged it (MQTT PUBACK or HTTP
2xx, both sent after the platform committed it). The queue is held to a disk budget: past
it the oldest readings are dropped, and the count is kept until it has been reported.

Durability (`fsync` setting, SQLite in WAL mode):

- ``full`` (synchronous=FULL): each append is fsynced before it returns; a reading
  survives a crash of the agent and a power loss once the append returned.
- ``normal`` (synchronous=NORMAL): survives a crash of the agent (the data is in the OS);
  a power loss may lose the readings appended since the last checkpoint, never corrupts.
- ``off`` (synchronous=OFF): survives a crash of the agent; a power loss may lose recent
  readings and can corrupt the file. For throw-away deployments only.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROW_OVERHEAD = 48  # bytes counted per row on top of its payload (ids, ts, b-tree)
_SYNC = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One queued reading: its queue id, time (epoch ms) and JSON values."""

    id: int
    ts: int
    body: str


@dataclass(frozen=True, slots=True)
class Stats:
    """What the queue holds and has done, for the agent's health report."""

    backlog: int
    backlog_bytes: int
    produced: int
    dropped: int
    dropped_unreported: int


class Store:
    """The queue file; safe to use from several threads (one connection, one lock)."""

    def __init__(
        self, path: Path, *, fsync: str = "full", budget_bytes: int, sequence: bool = False
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self.sequence = sequence
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()  # the batch last taken, until removed or retaken
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={_SYNC[fsync]}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM queue"
        ).fetchone()
        self._count = int(row[0])
        self._bytes = int(row[1]) + ROW_OVERHEAD * self._count

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            self._db.close()

    def _meta(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def append(self, values: dict[str, Any], *, now_ms: int) -> Entry:
        """Queue one reading; its ts is strictly after the previous one's (unique per key).

        With `sequence`, the reading also gets "seq", a counter that never repeats."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ts = max(now_ms, self._meta("last_ts") + 1)
                produced = self._meta("produced") + 1
                if self.sequence:
                    values = {**values, "seq": produced}
                body = json.dumps(values, separators=(",", ":"), allow_nan=False)
                cursor = self._db.execute("INSERT INTO queue (ts, body) VALUES (?, ?)", (ts, body))
                self._set_meta("last_ts", ts)
                self._set_meta("produced", produced)
                self._count += 1
                self._bytes += len(body) + ROW_OVERHEAD
                self._enforce_budget()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._recount()
                raise
            return Entry(int(cursor.lastrowid or 0), ts, body)

    def _recount(self) -> None:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM queue"
        ).fetchone()
        self._count = int(row[0])
        self._bytes = int(row[1]) + ROW_OVERHEAD * self._count

    def _enforce_budget(self) -> None:
        """Drop the oldest readings until the queue fits its budget again."""
        dropped = 0
        while self._bytes > self.budget_bytes and self._count > 1:
            excess = self._bytes - self.budget_bytes
            oldest = self._db.execute(
                "SELECT id, length(body) FROM queue ORDER BY id LIMIT 500"
            ).fetchall()
            ids: list[int] = []
            freed = 0
            for row_id, size in oldest[: self._count - 1]:  # never the reading just added
                if int(row_id) in self._in_flight:  # it may be stored already: not lost
                    continue
                ids.append(int(row_id))
                freed += int(size) + ROW_OVERHEAD
                if freed >= excess:
                    break
            if not ids:
                break
            marks = ",".join("?" * len(ids))
            self._db.execute(f"DELETE FROM queue WHERE id IN ({marks})", ids)  # noqa: S608
            self._count -= len(ids)
            self._bytes -= freed
            dropped += len(ids)
        if dropped:
            self._set_meta("dropped", self._meta("dropped") + dropped)
            self._set_meta("dropped_unreported", self._meta("dropped_unreported") + dropped)

    def take(self, limit: int, *, fresh_share: float = 0.25) -> list[Entry]:
        """The next batch to send, oldest first, with room kept for the newest readings.

        The batch is in flight until `remove` or `release`: the budget does not drop it.

        Up to `fresh_share` of the batch is the newest readings, the rest the oldest, so a
        long backlog drains in order while fresh data still gets through."""
        fresh = int(limit * fresh_share)
        with self._lock:
            newest = self._db.execute(
                "SELECT id, ts, body FROM queue ORDER BY id DESC LIMIT ?", (fresh,)
            ).fetchall()
            oldest = self._db.execute(
                "SELECT id, ts, body FROM queue ORDER BY id LIMIT ?", (limit - len(newest),)
            ).fetchall()
            rows = {int(r[0]): Entry(int(r[0]), int(r[1]), str(r[2])) for r in [*oldest, *newest]}
            self._in_flight = set(rows)
        return [rows[key] for key in sorted(rows)]

    def release(self) -> None:
        """The batch last taken was not sent: the budget may drop it again."""
        with self._lock:
            self._in_flight = set()

    def remove(self, ids: list[int]) -> None:
        """Forget readings the platform acknowledged (or refused for good)."""
        if not ids:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            removed = 0
            freed = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                row = self._db.execute(
                    f"SELECT count(*), coalesce(sum(length(body)), 0) FROM queue "  # noqa: S608
                    f"WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                removed += int(row[0])
                freed += int(row[1])
                self._db.execute(f"DELETE FROM queue WHERE id IN ({marks})", chunk)  # noqa: S608
            self._db.execute("COMMIT")
            self._in_flight.difference_update(ids)
            self._count -= removed
            self._bytes -= freed + ROW_OVERHEAD * removed

    def mark_dropped_reported(self, count: int) -> None:
        """The platform has heard of `count` dropped readings."""
        with self._lock:
            left = max(0, self._meta("dropped_unreported") - count)
            self._set_meta("dropped_unreported", left)

    def stats(self) -> Stats:
        """Backlog, produced and dropped counts."""
        with self._lock:
            return Stats(
                backlog=self._count,
                backlog_bytes=self._bytes,
                produced=self._meta("produced"),
                dropped=self._meta("dropped"),
                dropped_unreported=self._meta("dropped_unreported"),
            )


def payload(entries: list[Entry]) -> bytes:
    """The telemetry payload of a batch: [{"ts": ms, "values": {...}}, ...]."""
    items = ",".join(f'{{"ts":{e.ts},"values":{e.body}}}' for e in entries)
    return f"[{items}]".encode()
