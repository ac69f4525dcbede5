"""Live fan-out: what ingest, device status, commands and alerts publish, to WebSocket
subscribers of the same organization.

`LiveHub` is the interface; `InProcessHub` serves one process. `fleetcore.cluster.hub.RedisHub`
serves several (FLEETCORE_REDIS_URL): it delivers to its own subscribers through an
`InProcessHub`, sends the event to Redis only when another process wants it, and hands what
arrives from Redis to the same local hub.

Publishing never waits. Each subscriber has a bounded buffer; one that falls behind loses
its oldest buffered messages, is told how many ({"type": "lagged", "skipped": N}) and
continues from the newest, so a slow client never stalls ingest or other clients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from fleetcore.live import metrics

CHANNELS = ("telemetry", "status", "alerts", "commands", "analytics", "plates", "ota")
DEFAULT_BUFFER = 1_000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One message for the subscribers of an organization's channel (and device)."""

    organization_id: uuid.UUID
    channel: str
    device_id: uuid.UUID | None
    message: dict[str, Any]


_Key = tuple[uuid.UUID, str, uuid.UUID | None]  # organization, channel, device (None: all)


class Subscriber:
    """One WebSocket's subscriptions and its bounded outgoing buffer."""

    def __init__(self, organization_id: uuid.UUID, *, max_buffer: int = DEFAULT_BUFFER) -> None:
        self.organization_id = organization_id
        self.max_buffer = max_buffer
        # (channel, device or None) -> telemetry keys to keep (None: every key)
        self.subscriptions: dict[tuple[str, uuid.UUID | None], frozenset[str] | None] = {}
        self._buffer: deque[str] = deque()  # JSON text, encoded once per event
        self._skipped = 0
        # The sender waiting for a message, if it is: a bare future rather than an
        # asyncio.Event (publishing wakes every subscriber of an event, so this is paid
        # once per subscriber per message).
        self._waiter: asyncio.Future[None] | None = None
        metrics.track(self)

    def offer(self, event: LiveEvent, keys: frozenset[str] | None, text: str) -> None:
        """Buffer a message, already JSON (`text`), or cut down to `keys` for telemetry."""
        if keys is not None and event.channel == "telemetry":
            values = {k: v for k, v in event.message["values"].items() if k in keys}
            if not values:
                return
            text = orjson.dumps({**event.message, "values": values}).decode()
        self.notice(text)

    def notice(self, text: str) -> None:
        """Buffer one message as it is (JSON text), dropping the oldest if full."""
        if len(self._buffer) >= self.max_buffer:
            self._skipped += len(self._buffer)
            metrics.SKIPPED.inc(len(self._buffer))
            self._buffer.clear()
        self._buffer.append(text)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # (cancelled: its sender is gone)
                waiter.set_result(None)

    async def next(self) -> str:
        """The next message (JSON text); a "lagged" notice first if messages were dropped.
        One sender at a time (the socket's)."""
        while not self._buffer:
            self._waiter = waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        if self._skipped:
            skipped, self._skipped = self._skipped, 0
            metrics.LAGGED.inc()
            return orjson.dumps({"type": "lagged", "skipped": skipped}).decode()
        return self._buffer.popleft()

    @property
    def pending(self) -> int:
        """Messages buffered and not yet sent."""
        return len(self._buffer)


class LiveHub(Protocol):
    """Where live events go; in-process now, Redis-backed when scaled out."""

    def publish(self, event: LiveEvent) -> None:
        """Deliver to every matching subscriber; never blocks."""
        ...

    def wanted(self, organization_id: uuid.UUID, channel: str) -> bool:
        """Whether anyone may want this organization's channel (publishers skip work if not)."""
        ...

    def listening(self, channel: str) -> bool:
        """Whether anyone, in any organization, subscribes to the channel."""
        ...

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        device_id: uuid.UUID | None,
        keys: frozenset[str] | None = None,
    ) -> None:
        """Add (or replace) one subscription of a subscriber."""
        ...

    def unsubscribe(
        self, subscriber: Subscriber, channel: str, device_id: uuid.UUID | None
    ) -> None:
        """Remove one subscription."""
        ...

    def detach(self, subscriber: Subscriber) -> None:
        """Remove every subscription of a subscriber (its socket closed)."""
        ...


class InProcessHub:
    """Subscribers indexed by (organization, channel, device): publishing looks up two sets."""

    def __init__(self) -> None:
        self._index: defaultdict[_Key, set[Subscriber]] = defaultdict(set)
        self._channels: Counter[tuple[uuid.UUID, str]] = Counter()  # index keys per channel

    def wanted(self, organization_id: uuid.UUID, channel: str) -> bool:
        """Whether the organization has any subscription on the channel."""
        return self._channels[(organization_id, channel)] > 0

    def listening(self, channel: str) -> bool:
        """Whether any organization has a subscription on the channel."""
        return any(n > 0 for (_, name), n in self._channels.items() if name == channel)

    def publish(self, event: LiveEvent) -> None:
        """Offer the event to subscribers of its device and to organization-wide ones."""
        self.deliver(event, None)

    def deliver(self, event: LiveEvent, text: str | None) -> None:
        """Offer the event, already encoded as `text` (or encoded here, once, if needed)."""
        org, channel, device = event.organization_id, event.channel, event.device_id
        mine: set[Subscriber] = set()
        wide = self._index.get((org, channel, None), set())
        if device is not None:
            mine = self._index.get((org, channel, device), set())
        if not mine and not wide:
            return
        if text is None:
            text = orjson.dumps(event.message).decode()  # once, whatever the audience
        for subscriber in mine:
            subscriber.offer(event, subscriber.subscriptions.get((channel, device)), text)
        for subscriber in wide:
            if subscriber not in mine:  # subscribed both ways: once is enough
                subscriber.offer(event, subscriber.subscriptions.get((channel, None)), text)

    def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        device_id: uuid.UUID | None,
        keys: frozenset[str] | None = None,
    ) -> None:
        """Add (or replace) a subscription."""
        subscriber.subscriptions[(channel, device_id)] = keys
        key = (subscriber.organization_id, channel, device_id)
        if key not in self._index:
            self._channels[(subscriber.organization_id, channel)] += 1
        self._index[key].add(subscriber)

    def unsubscribe(
        self, subscriber: Subscriber, channel: str, device_id: uuid.UUID | None
    ) -> None:
        """Remove a subscription (no error if absent)."""
        subscriber.subscriptions.pop((channel, device_id), None)
        key = (subscriber.organization_id, channel, device_id)
        members = self._index.get(key)
        if members is not None:
            members.discard(subscriber)
            if not members:
                del self._index[key]
                self._channels[(subscriber.organization_id, channel)] -= 1

    def detach(self, subscriber: Subscriber) -> None:
        """Remove all of a subscriber's subscriptions."""
        for channel, device_id in list(subscriber.subscriptions):
            self.unsubscribe(subscriber, channel, device_id)

    def interests(self) -> set[tuple[uuid.UUID, str]]:
        """Every (organization, channel) with a subscription here."""
        return {key for key, n in self._channels.items() if n > 0}

    def subscribers(self) -> set[Subscriber]:
        """Distinct subscribers with at least one subscription."""
        return {s for members in self._index.values() for s in members}

    @property
    def subscriber_count(self) -> int:
        """Distinct subscribers with at least one subscription."""
        return len(self.subscribers())
