"""Presence shared through Redis (fleetcore.status.presence.PresenceShare).

- Connection counts: a hash per process, `fleetcore:connections:<process>` (device -> MQTT
  connections held there), expiring with the process (the heartbeat refreshes it; a process
  gone for PROCESS_TTL_S is no longer asked, and its hash expires). Written by one
  coalescing task, the latest count per device, so writes cannot overtake each other; the
  whole hash is rewritten after a reconnect (a restarted Redis is empty).
- Transitions: `fleetcore:presence` carries `<process> <device> <status>` after each commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from fleetcore.cluster.link import PROCESS_TTL_S, RedisLink, RedisUnavailable

CONNECTIONS = "fleetcore:connections"
CHANNEL = "fleetcore:presence"


class RedisPresence:
    """Connection counts and transitions shared by every process on one Redis."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.on_announced: Callable[[uuid.UUID, str], None] | None = None
        self._pid = link.process_id.encode()
        self._key = f"{CONNECTIONS}:{link.process_id}"
        self._held: dict[uuid.UUID, int] = {}
        self._dirty: set[uuid.UUID] = set()
        self._writing = False
        link.subscribe(CHANNEL, self._received)
        link.on_up.append(self._up)
        link.on_beat.append(self._beat)

    # -- PresenceShare ------------------------------------------------------------------

    def held(self, device_id: uuid.UUID, count: int) -> None:
        """This process holds `count` connections of the device now."""
        if count > 0:
            self._held[device_id] = count
        else:
            self._held.pop(device_id, None)
        self._dirty.add(device_id)
        if not self._writing and self.link.up:
            self._writing = True
            self.link.spawn(self._write())

    async def held_elsewhere(self, device_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which devices another live process holds a connection of (empty if unknown)."""
        others = sorted(self.link.live_processes - {self.link.process_id})
        if not others or not device_ids or not self.link.up:
            return set()
        ids = list(device_ids)
        fields = [str(d) for d in ids]
        try:
            async with self.link.client.pipeline(transaction=False) as pipe:
                for process in others:
                    pipe.hmget(f"{CONNECTIONS}:{process}", fields)
                answers: list[list[bytes | None]] = await self.link.call(pipe.execute())
        except RedisUnavailable:
            return set()
        return {ids[i] for counts in answers for i, n in enumerate(counts) if n and int(n) > 0}

    def announce(self, device_id: uuid.UUID, status: str) -> None:
        """Tell the other processes of a committed transition."""
        self.link.publish(
            CHANNEL,
            b"%s %s %s" % (self._pid, str(device_id).encode(), status.encode()),
            kind="presence",
        )

    # -- Redis --------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        origin, device, status = data.split(b" ", 2)
        if origin != self._pid and self.on_announced is not None:
            self.on_announced(uuid.UUID(device.decode()), status.decode())

    async def _write(self) -> None:
        try:
            while self._dirty and self.link.up:
                dirty, self._dirty = self._dirty, set()
                gone = [str(d) for d in dirty if d not in self._held]
                counts: dict[FieldT, EncodableT] = {
                    str(d): self._held[d] for d in dirty if d in self._held
                }
                try:
                    async with self.link.client.pipeline(transaction=True) as pipe:
                        if gone:
                            pipe.hdel(self._key, *gone)
                        if counts:
                            pipe.hset(self._key, mapping=counts)
                            pipe.expire(self._key, int(PROCESS_TTL_S))
                        await self.link.call(pipe.execute())
                except RedisUnavailable:
                    return  # rewritten whole when the link is back
        finally:
            self._writing = False

    async def _up(self) -> None:
        self._dirty.clear()
        async with self.link.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            if self._held:
                held: dict[FieldT, EncodableT] = {str(d): n for d, n in self._held.items()}
                pipe.hset(self._key, mapping=held)
                pipe.expire(self._key, int(PROCESS_TTL_S))
            await self.link.call(pipe.execute())

    async def _beat(self, client: Redis) -> None:
        if self._held:
            await client.expire(self._key, int(PROCESS_TTL_S))
        if self._dirty and not self._writing:  # noted while the link was coming up
            self._writing = True
            self.link.spawn(self._write())
