"""Which part of the platform runs in which process role (`fleetcore serve --role`).

One table, read by the lifespan: a part not listed for a role is not started, registered or
attached there. Objects the routes read (the rules engine for reloads, the notification
dispatcher for channel secrets, the command service) are still built in every role; the
table decides what runs. docs/architecture.md ("Process roles") shows the same table.

- api: HTTP and WebSocket; the HTTP device routes, so the pipeline and what runs after its
  commit (rules, analytics, live) for the readings they take.
- ingest: device traffic from the embedded broker or an external one, the pipeline and its
  after-commit handlers; HTTP serves /health, /ready and /metrics only.
- worker: the cluster's periodic jobs (each run once per tick across processes, see
  fleetcore.job_leases) and the notification dispatcher; ops routes only.
- all: everything in one process (SQLite, or one PostgreSQL process).
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["all", "api", "ingest", "worker"]
ROLES: tuple[Role, ...] = get_args(Role)

_API: frozenset[Role] = frozenset({"all", "api"})
_TRAFFIC: frozenset[Role] = frozenset({"all", "api", "ingest"})  # device readings arrive here
_DEVICES: frozenset[Role] = frozenset({"all", "ingest"})  # MQTT sessions live here
_JOBS: frozenset[Role] = frozenset({"all", "worker"})

# part -> roles it runs in. Components go by their `name`, jobs by theirs.
RUNS_IN: dict[str, frozenset[Role]] = {
    # HTTP
    "routes.api": _API,  # /api/v1, pages, WebSocket (ops routes are everywhere)
    # components
    "telemetry-pipeline": _TRAFFIC,
    "dead-letters": _TRAFFIC,
    "rules-engine": _TRAFFIC | _JOBS,  # evaluates batches; the worker's runs the no-data sweep
    "analytics-engine": _TRAFFIC,
    "presence": _TRAFFIC,
    "desired-state": _API | _DEVICES,  # long-polls (api), MQTT config pushes (ingest)
    "commands": _API | _DEVICES | _JOBS,  # delivery (api: HTTP, ingest: MQTT), expiry (worker)
    "notifications": _JOBS,  # the dispatcher; api and ingest stage deliveries for it
    "ota": _TRAFFIC,  # rollout progress from client attributes reported here
    # Mosquitto dynsec: stages where credentials change (api, MQTT provisioning); rows are
    # applied by whichever process claims them first (a lease per row).
    "broker-sync": frozenset(ROLES),
    "usage-meter": frozenset(ROLES),  # every process counts something; flushed at its stop
    "redis": frozenset(ROLES),  # the Redis link (FLEETCORE_REDIS_URL): every process shares
    "mqtt-broker": _DEVICES,  # the embedded broker: one process only
    "mqtt-external": _API | _DEVICES,  # ingest consumes; api publishes commands and config
    "mqtt.consume": _DEVICES,  # the external broker's shared subscriptions
    "mqtt.ordered-lane": _DEVICES,  # one of these processes at a time (external_broker/lane.py)
    # after-commit handlers of the pipeline
    "handler.live": _TRAFFIC,
    "handler.rules": _TRAFFIC,
    "handler.analytics": _TRAFFIC,
    # jobs: once per tick across processes
    "telemetry-retention": _JOBS,
    "telemetry-partitions": _JOBS,
    "telemetry-compaction": _JOBS,
    "telemetry-archive": _JOBS,  # closed days to Parquet (archive_enabled)
    "housekeeping.retention": _JOBS,  # every growing table but telemetry (and media)
    "commands.expire": _JOBS,
    "rules.no-data": _JOBS,
    "presence.sweep": _JOBS,
    "recommendations.expire": _JOBS,
    "recommendations.sync": _JOBS,
    "media.housekeeping": _JOBS,  # media retention, deleted devices, expired uploads, orphans
    "usage.rollup": _JOBS,  # daily usage past its retention into months
    "usage.storage": _JOBS,  # the daily storage snapshot
    "ota.rollouts": _JOBS,  # OTA stages and automatic pauses
    # jobs: every process that holds the state they work on
    "presence.seen": _TRAFFIC,  # last-seen times noted here (all: part of presence.sweep)
    "rules.refresh": _TRAFFIC,  # rules changed by another process (all: told in-process)
    "analytics.health": _TRAFFIC,  # findings held by this process's engine
    "usage.flush": frozenset(ROLES),  # this process's usage counters to the database
    # plans changed through another process (quotas, API limits); all too: several "all"
    # processes may share one PostgreSQL
    "plans.refresh": _TRAFFIC,
}


def runs(part: str, role: Role) -> bool:
    """Whether `part` runs in `role` (a part missing from the table is a programming error)."""
    return role in RUNS_IN[part]


def split(role: Role) -> bool:
    """True when other processes share the work (any role but all)."""
    return role != "all"
