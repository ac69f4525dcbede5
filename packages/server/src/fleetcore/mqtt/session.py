"""An MQTT session: what the broker keeps about one client between and across connections.

A session is keyed by the authenticated principal and the client id together
("principal|client id"), so one device's credentials never reach another's session. It
holds the subscriptions with their granted QoS, the outgoing QoS 1 messages sent and not
yet acknowledged (resent, DUP, when a persistent session reconnects; a message leaves only
when its PUBACK arrives), the QoS 1 messages that arrived for it while it was offline (at
most MAX_OFFLINE_MESSAGES, the oldest dropped first) and the will of its connection.

Subscriptions are matched by walking the session's own filters: the broker only ever sends
to one principal's sessions (`deliver`), each with a handful of filters, so a topic tree
across all sessions would cost more than it saves.

Only the event loop's thread touches a session; nothing here awaits.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from fleetcore_protocol.topics import topic_matches

MAX_OFFLINE_MESSAGES = 1_000


@dataclass(frozen=True, slots=True)
class Will:
    """A connection's last will: handed to the application if the connection ends abnormally."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for a client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(eq=False)
class Session:
    """One client's state (see the module docstring)."""

    key: str
    principal_key: str
    clean: bool = True  # ends with its connection (3.1.1 clean session, MQTT 5 expiry 0)
    expiry_s: float | None = None  # how long a persistent session outlives its connection
    subscriptions: dict[str, int] = field(default_factory=dict)  # filter -> granted QoS
    inflight: dict[int, Outgoing] = field(default_factory=dict)  # sent, not acknowledged
    offline: deque[Outgoing] = field(default_factory=lambda: deque(maxlen=MAX_OFFLINE_MESSAGES))
    will: Will | None = None
    _last_id: int = 0

    def granted(self, topic: str) -> int | None:
        """The highest QoS granted by a filter matching `topic`, or None if none matches."""
        best: int | None = None
        for topic_filter, qos in self.subscriptions.items():
            if (best is None or qos > best) and topic_matches(topic, topic_filter):
                best = qos
        return best

    def next_packet_id(self) -> int:
        """A packet identifier not used by a message in flight (1 to 65535, in turn)."""
        for _ in range(0xFFFF):
            self._last_id = self._last_id % 0xFFFF + 1
            if self._last_id not in self.inflight:
                return self._last_id
        raise OverflowError("65,535 messages in flight")

    def queue(self, message: Outgoing) -> bool:
        """Keep a message for the next connection; False if the oldest had to go for it."""
        full = len(self.offline) == self.offline.maxlen
        self.offline.append(message)
        return not full

    def clear(self) -> None:
        """Forget everything the session holds."""
        self.subscriptions.clear()
        self.inflight.clear()
        self.offline.clear()
        self.will = None
