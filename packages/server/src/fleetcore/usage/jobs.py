"""The usage jobs: flushing this process's counters, the storage snapshot, the monthly roll-up."""

from __future__ import annotations

from functools import partial

from fleetcore.config import Settings
from fleetcore.db import Database, utcnow
from fleetcore.jobs import JobScheduler
from fleetcore.usage import rollup, storage
from fleetcore.usage.meter import UsageMeter

FLUSH_JOB = "usage.flush"


async def _roll_up(database: Database, settings: Settings) -> None:
    await rollup.roll_up(database, settings, now=utcnow())


async def _snapshot(database: Database) -> None:
    await storage.snapshot(database, now=utcnow())


def register_jobs(
    jobs: JobScheduler, database: Database, meter: UsageMeter, settings: Settings
) -> None:
    """Flush in every process (its own counters); snapshot and roll up once per tick."""
    jobs.register(FLUSH_JOB, settings.usage_flush_interval_s, meter.flush_quietly, per_process=True)
    jobs.register(storage.JOB_NAME, settings.usage_storage_interval_s, partial(_snapshot, database))
    jobs.register(rollup.JOB_NAME, rollup.INTERVAL_S, partial(_roll_up, database, settings))
