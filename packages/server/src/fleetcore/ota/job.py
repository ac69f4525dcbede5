"""The rollout job: re-reads what devices reported, pauses a rollout whose failures reach
its limit, and starts the next stage once the current one has ended and its pause passed.

Run once per tick across processes (fleetcore.job_leases); within a tick each decision is
one conditional UPDATE on the rollout (status, current stage), so a manual pause or abort
racing with the job leaves one outcome, never both.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import Database, utcnow
from fleetcore.jobs import JobScheduler
from fleetcore.live.hub import LiveHub
from fleetcore.ota import progress
from fleetcore.ota.models import DeviceState, OtaPackage, OtaRollout, RolloutStatus
from fleetcore.ota.rollouts import release, start_stage

log = structlog.get_logger(__name__)

JOB_NAME = "ota.rollouts"
_OPEN_IN_STAGE = (DeviceState.PENDING, *DeviceState.IN_FLIGHT)


async def run(database: Database, hub: LiveHub) -> None:
    """One pass over every open rollout."""
    async with database.session(write=True) as session:
        moved = await progress.sync_devices(session)
        await session.commit()
    progress.publish_devices(hub, moved)
    async with database.session() as session:
        active = list(
            (
                await session.scalars(
                    select(OtaRollout.id).where(OtaRollout.status == RolloutStatus.ACTIVE)
                )
            ).all()
        )
    for rollout_id in active:
        try:
            await step(database, hub, rollout_id)
        except Exception:  # one rollout's trouble must not stop the others
            log.exception("ota_rollout_step_failed", rollout_id=str(rollout_id))


async def _set(session: AsyncSession, rollout: OtaRollout, **values: object) -> bool:
    """One conditional UPDATE: only if the rollout is still active at the stage read."""
    result = await session.execute(
        update(OtaRollout)
        .where(
            OtaRollout.id == rollout.id,
            OtaRollout.status == RolloutStatus.ACTIVE,
            OtaRollout.current_stage == rollout.current_stage,
        )
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


async def step(database: Database, hub: LiveHub, rollout_id: uuid.UUID) -> None:
    """Pause on failures, or move to the next stage (or the end) when it is time."""
    async with database.session(write=True) as session:
        rollout = await session.get(OtaRollout, rollout_id)
        if rollout is None or rollout.status != RolloutStatus.ACTIVE:
            return
        by_stage = await progress.counts(session, rollout.id)
        overall = progress.total(by_stage)
        failed = overall[DeviceState.FAILED]
        rate = progress.failure_rate(overall)
        if failed > rollout.failures_acknowledged and rate >= rollout.max_failure_rate:
            reason = (
                f"failure rate {rate:.0%} reached the limit {rollout.max_failure_rate:.0%} "
                f"({failed} failed)"
            )
            if await _set(session, rollout, status=RolloutStatus.PAUSED, paused_reason=reason):
                await session.commit()
                log.info("ota_rollout_auto_paused", rollout_id=str(rollout.id), rate=rate)
                await _publish(session, hub, rollout)
            return
        current = by_stage.get(rollout.current_stage, Counter[str]())
        if any(current.get(state, 0) for state in _OPEN_IN_STAGE):
            return
        now = utcnow()
        last = rollout.current_stage >= len(rollout.stage_sizes) - 1
        if last:
            if await _set(session, rollout, status=RolloutStatus.COMPLETED, stage_done_at=now):
                await release(session, rollout.id)
                await session.commit()
                await _publish(session, hub, rollout)
            return
        if rollout.stage_done_at is None:
            await _set(session, rollout, stage_done_at=now)
            await session.commit()
            done_at = now
        else:
            done_at = rollout.stage_done_at
        pause_s = int(rollout.strategy.get("pause_s", 0) or 0)
        if now < done_at + timedelta(seconds=pause_s):
            return
        following = rollout.current_stage + 1
        if not await _set(session, rollout, current_stage=following, stage_done_at=None):
            await session.rollback()
            return  # paused, aborted or advanced meanwhile
        package = await session.get(OtaPackage, rollout.package_id)
        assert package is not None
        rollout.current_stage = following
        queued = await start_stage(session, rollout, package, following, actor=None)
        await session.commit()
        log.info("ota_stage_started", rollout_id=str(rollout.id), stage=following, queued=queued)
        await _publish(session, hub, rollout)


async def _publish(session: AsyncSession, hub: LiveHub, rollout: OtaRollout) -> None:
    await session.refresh(rollout)
    await progress.publish_rollout(session, hub, rollout)


def register_job(jobs: JobScheduler, database: Database, hub: LiveHub, interval_s: float) -> None:
    """Run the pass every `interval_s` (worker role; once per tick across processes)."""

    async def rollouts() -> None:
        await run(database, hub)

    jobs.register(JOB_NAME, interval_s, rollouts)
