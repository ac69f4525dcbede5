"""Prometheus metrics shared by every module, and the /metrics exposition."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

HTTP_REQUESTS = Counter(
    "fleetcore_http_requests_total",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "fleetcore_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOB_RUNS = Counter(
    "fleetcore_job_runs_total", "Background job runs, by job and outcome.", ["job", "outcome"]
)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text for every registered metric (process metrics included)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
