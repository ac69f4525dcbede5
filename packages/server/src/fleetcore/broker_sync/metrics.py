"""Prometheus metrics of the broker credential outbox."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PENDING = Gauge(
    "fleetcore_broker_sync_pending", "Broker credential changes not yet applied (last poll)."
)
APPLIED = Counter(
    "fleetcore_broker_sync_applied_total", "Broker credential changes applied.", ["action"]
)
FAILURES = Counter(
    "fleetcore_broker_sync_failures_total",
    "Broker credential changes that failed an attempt (and will be retried).",
    ["reason"],  # unavailable | refused | internal
)
