"""Sending slots: how many deliveries are in flight, in all, per organization, per channel.

A receiver that hangs holds its slots until the send's deadline; the caps per organization
and per channel keep one tenant's slow receivers from holding every slot, so the others'
deliveries keep going out.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable


class Slots:
    """Deliveries in flight, against a total cap and caps per organization and channel."""

    def __init__(self, *, total: int, per_org: int, per_channel: int) -> None:
        self.total = total
        self.per_org = per_org
        self.per_channel = per_channel
        self.busy = 0
        self._orgs: Counter[uuid.UUID] = Counter()
        self._channels: Counter[uuid.UUID] = Counter()

    @property
    def free(self) -> int:
        """Deliveries that may start now, whoever they belong to."""
        return max(0, self.total - self.busy)

    def full_orgs(self) -> list[uuid.UUID]:
        """Organizations with no slot left."""
        return [org for org, busy in self._orgs.items() if busy >= self.per_org]

    def full_channels(self) -> list[uuid.UUID]:
        """Channels with no slot left."""
        return [channel for channel, busy in self._channels.items() if busy >= self.per_channel]

    def pick(self, candidates: Iterable[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]) -> list[uuid.UUID]:
        """The (delivery, organization, channel) candidates that fit, in order (none taken)."""
        orgs = Counter(self._orgs)
        channels = Counter(self._channels)
        picked: list[uuid.UUID] = []
        for delivery, org, channel in candidates:
            if len(picked) >= self.free:
                break
            if orgs[org] >= self.per_org or channels[channel] >= self.per_channel:
                continue
            orgs[org] += 1
            channels[channel] += 1
            picked.append(delivery)
        return picked

    def take(self, org: uuid.UUID, channel: uuid.UUID) -> None:
        """A delivery of this organization and channel starts."""
        self.busy += 1
        self._orgs[org] += 1
        self._channels[channel] += 1

    def give_back(self, org: uuid.UUID, channel: uuid.UUID) -> None:
        """A delivery of this organization and channel is done (recorded or not)."""
        self.busy -= 1
        self._orgs[org] -= 1
        self._channels[channel] -= 1
        if self._orgs[org] <= 0:
            del self._orgs[org]
        if self._channels[channel] <= 0:
            del self._channels[channel]
