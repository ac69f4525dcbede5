"""Rules engine metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVALUATIONS = Counter(
    "fleetcore_rule_evaluations_total", "Rule evaluations (one rule, one device, one time)."
)
LATE = Counter(
    "fleetcore_rule_late_readings_total",
    "Readings older than what the engine evaluated for their device: stored, not evaluated.",
)
ALERT_EVENTS = Counter(
    "fleetcore_alert_events_total", "Alert changes made by the rules engine.", ["event"]
)
BATCH_SECONDS = Histogram(
    "fleetcore_rules_batch_seconds",
    "Time to evaluate one committed telemetry batch and store what it changed.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
QUEUE = Gauge("fleetcore_rules_queue_batches", "Committed batches waiting for the rules engine.")
ACTIVE_RULES = Gauge("fleetcore_rules_enabled", "Enabled rules the engine evaluates.")
