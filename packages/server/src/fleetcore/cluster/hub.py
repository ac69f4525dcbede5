"""The live hub across processes: Redis pub/sub per organization and channel.

`RedisHub` is a `LiveHub` (fleetcore.live.hub). Its own WebSocket subscribers live in a local
`InProcessHub`, with the same bounded buffers and "lagged" notices; Redis carries events
between processes:

- Interest. Each process keeps the (organization, channel) pairs its subscribers want in a
  Redis set `fleetcore:interest:<process>` (expiring with the process: refreshed by the
  heartbeat, rewritten whole on every change and after a reconnect) and announces a change
  on `fleetcore:interest`. Every process keeps a local copy of the other processes' interest,
  reloaded on each announcement and on every heartbeat (the short poll that also forgets dead
  processes), so `wanted()` and `listening()` stay local dictionary look-ups.
- Publishing. An event nobody wants anywhere is not encoded, nor sent. Otherwise it is
  encoded once: delivered to local subscribers directly (even while Redis is down), and
  published on `fleetcore:live:<organization>:<channel>` only when another process wants
  that pair, as `<process> <device or -> <json>`.
- Receiving. A process subscribes to the Redis channel of each pair its subscribers want,
  skips what it published itself and hands the JSON text, not re-encoded, to its local hub.
- Redis down: events from other processes stop; each local subscriber gets
  {"type": "paused", "reason": "redis"} at once, and {"type": "lagged", "skipped": null,
  "reason": "redis"} when Redis is back (an unknown number of events were missed). Local
  events keep flowing meanwhile.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter

import orjson
from redis.asyncio import Redis

from fleetcore.cluster.link import PROCESS_TTL_S, Handler, RedisLink, RedisUnavailable
from fleetcore.live.hub import InProcessHub, LiveEvent, Subscriber

INTEREST = "fleetcore:interest"
PAUSED = orjson.dumps({"type": "paused", "reason": "redis"}).decode()
RESUMED = orjson.dumps({"type": "lagged", "skipped": None, "reason": "redis"}).decode()

_Pair = tuple[uuid.UUID, str]


def live_channel(organization_id: uuid.UUID, channel: str) -> str:
    """The Redis pub/sub channel of an organization's live channel."""
    return f"fleetcore:live:{organization_id}:{channel}"


def _member(pair: _Pair) -> str:
    return f"{pair[0]}:{pair[1]}"


def _pair(member: bytes) -> _Pair | None:
    organization, _, channel = member.decode().partition(":")
    try:
        return uuid.UUID(organization), channel
    except ValueError:
        return None


class RedisHub:
    """A LiveHub whose events reach the subscribers of every process sharing one Redis."""

    def __init__(self, link: RedisLink, local: InProcessHub | None = None) -> None:
        self.link = link
        self.local = local or InProcessHub()
        self._pid = link.process_id.encode()
        self._key = f"{INTEREST}:{link.process_id}"
        self._remote: frozenset[_Pair] = frozenset()  # wanted by another process
        self._remote_channels: Counter[str] = Counter()
        self._interrupted = self._stale = False
        self._syncing = self._resync = False
        self._refreshing = self._refresh_again = False
        link.on_up.append(self._up)
        link.on_down.append(self._down)
        link.on_beat.append(self._beat)
        link.subscribe(INTEREST, self._announced)

    # -- LiveHub ------------------------------------------------------------------------

    def wanted(self, organization_id: uuid.UUID, channel: str) -> bool:
        """Whether a subscriber of any process wants this organization's channel."""
        return (organization_id, channel) in self._remote or self.local.wanted(
            organization_id, channel
        )

    def listening(self, channel: str) -> bool:
        """Whether a subscriber of any process, any organization, wants the channel."""
        return self._remote_channels[channel] > 0 or self.local.listening(channel)

    def publish(self, event: LiveEvent) -> None:
        """Deliver here at once; send to Redis if another process wants it. Never waits."""
        pair = (event.organization_id, event.channel)
        here = self.local.wanted(*pair)
        elsewhere = pair in self._remote and self.link.up
        if not here and not elsewhere:
            return
        data = orjson.dumps(event.message)
        if here:
            self.local.deliver(event, data.decode())
        if elsewhere:
            device = str(event.device_id).encode() if event.device_id else b"-"
            self.link.publish(
                live_channel(*pair), b"%s %s %s" % (self._pid, device, data), kind="live"
            )

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        device_id: uuid.UUID | None,
        keys: frozenset[str] | None = None,
    ) -> None:
        """Add (or replace) a subscription; a new pair is registered in Redis."""
        pair = (subscriber.organization_id, channel)
        new = not self.local.wanted(*pair)
        self.local.subscribe(subscriber, channel, device_id, keys)
        if new:
            self.link.subscribe(live_channel(*pair), self._receiver(pair))
            self._changed()

    def unsubscribe(
        self, subscriber: Subscriber, channel: str, device_id: uuid.UUID | None
    ) -> None:
        """Remove a subscription; a pair nobody here wants any more leaves Redis."""
        pair = (subscriber.organization_id, channel)
        was = self.local.wanted(*pair)
        self.local.unsubscribe(subscriber, channel, device_id)
        if was and not self.local.wanted(*pair):
            self.link.unsubscribe(live_channel(*pair))
            self._changed()

    def detach(self, subscriber: Subscriber) -> None:
        """Remove all of a subscriber's subscriptions."""
        for channel, device_id in list(subscriber.subscriptions):
            self.unsubscribe(subscriber, channel, device_id)

    @property
    def subscriber_count(self) -> int:
        """Distinct subscribers of this process."""
        return self.local.subscriber_count

    # -- receiving ----------------------------------------------------------------------

    def _receiver(self, pair: _Pair) -> Handler:
        organization_id, channel = pair

        def receive(data: bytes) -> None:
            origin, device, text = data.split(b" ", 2)
            if origin == self._pid:
                return  # delivered here when it was published
            device_id = None if device == b"-" else uuid.UUID(device.decode())
            event = LiveEvent(organization_id, channel, device_id, orjson.loads(text))
            self.local.deliver(event, text.decode())

        return receive

    # -- interest -----------------------------------------------------------------------

    @property
    def _subscribed(self) -> set[_Pair]:
        return self.local.interests()

    def _changed(self) -> None:
        """Local interest changed: rewrite this process's set (coalesced) and announce it."""
        if self._syncing:
            self._resync = True
        elif self.link.up:
            self._syncing = True
            self.link.spawn(self._sync_loop())
        else:
            self._stale = True  # registered when the link is (back) up

    async def _sync_loop(self) -> None:
        try:
            while True:
                self._resync = False
                with contextlib.suppress(RedisUnavailable):  # rewritten after a reconnect
                    await self.link.call(self._register(self.link.client, announce=True))
                if not self._resync:
                    return
        finally:
            self._syncing = False

    async def _register(self, client: Redis, *, announce: bool) -> None:
        members = [_member(pair) for pair in self._subscribed]
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            if members:
                pipe.sadd(self._key, *members)
                pipe.expire(self._key, int(PROCESS_TTL_S))
            if announce:
                pipe.publish(INTEREST, self._pid)
            await pipe.execute()

    def _announced(self, data: bytes) -> None:
        if data != self._pid:
            self._refresh_soon()

    def _refresh_soon(self) -> None:
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        self.link.spawn(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        try:
            while True:
                self._refresh_again = False
                with contextlib.suppress(RedisUnavailable):  # the next heartbeat tries again
                    await self.link.call(self._refresh(self.link.client))
                if not self._refresh_again:
                    return
        finally:
            self._refreshing = False

    async def _refresh(self, client: Redis) -> None:
        """Load the other live processes' interest into the local copy."""
        others = sorted(self.link.live_processes - {self.link.process_id})
        remote: set[_Pair] = set()
        if others:
            async with client.pipeline(transaction=False) as pipe:
                for process in others:
                    pipe.smembers(f"{INTEREST}:{process}")
                for members in await pipe.execute():
                    remote.update(p for p in map(_pair, members) if p is not None)
        self._set_remote(frozenset(remote))

    def _set_remote(self, remote: frozenset[_Pair]) -> None:
        self._remote = remote
        self._remote_channels = Counter(channel for _, channel in remote)

    # -- the link's callbacks -----------------------------------------------------------

    async def _up(self) -> None:
        self._stale = False
        await self.link.call(self._register(self.link.client, announce=True))
        await self.link.call(self._refresh(self.link.client))
        if self._interrupted:
            self._interrupted = False
            for subscriber in self.local.subscribers():
                subscriber.notice(RESUMED)

    def _down(self) -> None:
        self._set_remote(frozenset())  # nobody elsewhere can be reached: build nothing for them
        self._interrupted = True
        for subscriber in self.local.subscribers():
            subscriber.notice(PAUSED)

    async def _beat(self, client: Redis) -> None:
        if self._stale:
            self._stale = False
            await self._register(client, announce=True)
        elif self._subscribed:
            await client.expire(self._key, int(PROCESS_TTL_S))
        await self._refresh(client)
