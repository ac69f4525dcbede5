"""Prometheus metrics of the live feed: WebSocket clients, what they were sent, what they lost."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

if TYPE_CHECKING:
    from fleetcore.live.hub import Subscriber

CLIENTS = Gauge("fleetcore_live_websocket_clients", "WebSocket clients of /api/v1/ws open now.")
SENT = Counter(
    "fleetcore_live_messages_sent_total",
    "Live messages (lagged notices included) sent to WebSocket clients.",
)
SKIPPED = Counter(
    "fleetcore_live_messages_skipped_total",
    "Messages dropped from a slow client's full buffer (the client is told it lagged).",
)
LAGGED = Counter(
    "fleetcore_live_lagged_notices_total", "Lagged notices sent to clients that fell behind."
)

# Every subscriber alive in the process; the gauge sums their buffers when scraped, so
# publishing (once per subscriber per event) does not pay for it.
_subscribers: weakref.WeakSet[Subscriber] = weakref.WeakSet()
BUFFERED = Gauge(
    "fleetcore_live_buffered_messages",
    "Messages waiting in WebSocket clients' buffers (a client's lag before it is skipped).",
)
BUFFERED.set_function(lambda: sum(s.pending for s in list(_subscribers)))


def track(subscriber: Subscriber) -> None:
    """Count this subscriber's buffer in fleetcore_live_buffered_messages while it lives."""
    _subscribers.add(subscriber)
