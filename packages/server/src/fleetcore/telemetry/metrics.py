"""Ingest metrics: accepted, rejected by reason, de-duplicated, batch size, latency, depth."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ACCEPTED = Counter(
    "fleetcore_telemetry_readings_accepted_total",
    "Readings that passed validation and entered the pipeline, by transport.",
    ["transport"],
)
REJECTED = Counter(
    "fleetcore_telemetry_readings_rejected_total",
    "Readings refused, by reason (validation code, overloaded, ...).",
    ["reason"],
)
STORED = Counter("fleetcore_telemetry_readings_stored_total", "New readings committed.")
DUPLICATES = Counter(
    "fleetcore_telemetry_readings_deduplicated_total",
    "Readings already stored for the same (device, key, ts), dropped by the writer.",
)
BATCH_SIZE = Histogram(
    "fleetcore_telemetry_batch_size",
    "Readings per committed batch.",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
)
WRITE_SECONDS = Histogram(
    "fleetcore_telemetry_write_seconds",
    "Time to write and commit one batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WRITE_FAILURES = Counter(
    "fleetcore_telemetry_write_failures_total",
    "Batches that failed to commit (retried by senders).",
)
QUEUE_DEPTH = Gauge(
    "fleetcore_telemetry_queue_depth", "Readings accepted and waiting to be committed."
)
