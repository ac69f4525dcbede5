"""A device's update state, from what it reports: fw_state / sw_state client attributes.

ThingsBoard's states map onto ours (VERIFIED is "verifying": the checksum is checked, the
install not started). A report counts only if it changed after the assignment (the client
scope's version at that moment is the row's baseline): an UPDATED left from the previous
update says nothing about this one.

Concurrency rule: each change is one conditional UPDATE ``... WHERE state = <the state read>``,
so the listener (after a report commits) and the job (re-reading every open rollout) may
both see the same report; one of them moves the row, the other's UPDATE matches nothing.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.attributes import service as attributes
from fleetcore.db import utcnow
from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore.ota.assignment import prefix, state_keys
from fleetcore.ota.models import (
    DeviceState,
    OtaPackage,
    OtaRollout,
    OtaRolloutDevice,
    RolloutStatus,
)

CHANNEL = "ota"
REPORTED = {
    "DOWNLOADING": DeviceState.DOWNLOADING,
    "DOWNLOADED": DeviceState.DOWNLOADED,
    "VERIFIED": DeviceState.VERIFYING,
    "VERIFYING": DeviceState.VERIFYING,
    "UPDATING": DeviceState.UPDATING,
    "UPDATED": DeviceState.UPDATED,
    "FAILED": DeviceState.FAILED,
}


@dataclass(frozen=True, slots=True)
class Moved:
    """One device's state changed in one rollout."""

    organization_id: uuid.UUID
    rollout_id: uuid.UUID
    device_id: uuid.UUID
    state: str
    error: str | None


def reported_state(
    kind: str, values: dict[str, tuple[Any, int]], baseline: int, package: OtaPackage
) -> tuple[str, str | None] | None:
    """(state, error) the device reports for this assignment, None when it says nothing new."""
    p = prefix(kind)
    reported = values.get(f"{p}_state")
    if reported is None or reported[1] <= baseline or not isinstance(reported[0], str):
        return None
    state = REPORTED.get(reported[0].upper())
    if state is None:
        return None
    error = None
    if state == DeviceState.FAILED:
        raw = values.get(f"{p}_error")
        error = str(raw[0])[:512] if raw is not None and raw[0] is not None else "FAILED"
    elif state == DeviceState.UPDATED:
        current = values.get(f"current_{p}_version")
        if current is not None and current[0] != package.version:
            return DeviceState.FAILED, f"reported UPDATED at version {str(current[0])[:64]!r}"
    return state, error


async def sync_devices(
    session: AsyncSession, device_ids: list[uuid.UUID] | None = None
) -> list[Moved]:
    """Apply what devices reported to their rows in open rollouts (all devices of open
    rollouts when `device_ids` is None). The caller commits."""
    query = (
        select(OtaRolloutDevice, OtaRollout.organization_id, OtaPackage)
        .join(OtaRollout, OtaRollout.id == OtaRolloutDevice.rollout_id)
        .join(OtaPackage, OtaPackage.id == OtaRollout.package_id)
        .where(
            OtaRollout.status.in_(RolloutStatus.OPEN),
            OtaRolloutDevice.state.in_(DeviceState.REPORTABLE),
        )
    )
    if device_ids is not None:
        query = query.where(OtaRolloutDevice.device_id.in_(device_ids))
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    keys = set().union(*(state_keys(package.kind) for _, _, package in rows))
    values = await attributes.reported(session, list({row.device_id for row, _, _ in rows}), keys)
    moved: list[Moved] = []
    for row, organization_id, package in rows:
        found = reported_state(package.kind, values.get(row.device_id, {}), row.baseline, package)
        if found is None or (found[0] == row.state and found[1] == row.error):
            continue
        state, error = found
        result = await session.execute(
            update(OtaRolloutDevice)
            .where(
                OtaRolloutDevice.rollout_id == row.rollout_id,
                OtaRolloutDevice.device_id == row.device_id,
                OtaRolloutDevice.state == row.state,
            )
            .values(state=state, error=error, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if int(result.rowcount or 0) == 1:  # type: ignore[attr-defined]
            moved.append(Moved(organization_id, row.rollout_id, row.device_id, state, error))
    return moved


async def counts(session: AsyncSession, rollout_id: uuid.UUID) -> dict[int, Counter[str]]:
    """Devices by stage and state."""
    rows = await session.execute(
        select(OtaRolloutDevice.stage, OtaRolloutDevice.state, func.count())
        .where(OtaRolloutDevice.rollout_id == rollout_id)
        .group_by(OtaRolloutDevice.stage, OtaRolloutDevice.state)
    )
    found: dict[int, Counter[str]] = {}
    for stage, state, count in rows:
        found.setdefault(int(stage), Counter())[str(state)] = int(count)
    return found


def total(by_stage: dict[int, Counter[str]]) -> Counter[str]:
    """The counts of every stage together."""
    out: Counter[str] = Counter()
    for counter in by_stage.values():
        out.update(counter)
    return out


def failure_rate(overall: Counter[str]) -> float:
    """Failed over the devices assigned so far (pending and cancelled ones do not count)."""
    assigned = sum(n for state, n in overall.items() if state not in _UNASSIGNED)
    return overall[DeviceState.FAILED] / assigned if assigned else 0.0


_UNASSIGNED = (DeviceState.PENDING, DeviceState.CANCELLED)


async def publish_rollout(session: AsyncSession, hub: LiveHub, rollout: OtaRollout) -> None:
    """The rollout's status and counts on the organization's "ota" channel."""
    if not hub.wanted(rollout.organization_id, CHANNEL):
        return
    overall = total(await counts(session, rollout.id))
    hub.publish(
        LiveEvent(
            rollout.organization_id,
            CHANNEL,
            None,
            {
                "type": "rollout",
                "id": str(rollout.id),
                "status": rollout.status,
                "current_stage": rollout.current_stage,
                "paused_reason": rollout.paused_reason,
                "counts": dict(overall),
                "failure_rate": round(failure_rate(overall), 4),
            },
        )
    )


def publish_devices(hub: LiveHub, moved: list[Moved]) -> None:
    """Each device's new state on its organization's "ota" channel (and the device's)."""
    for change in moved:
        if not hub.wanted(change.organization_id, CHANNEL):
            continue
        hub.publish(
            LiveEvent(
                change.organization_id,
                CHANNEL,
                change.device_id,
                {
                    "type": "device",
                    "rollout_id": str(change.rollout_id),
                    "device_id": str(change.device_id),
                    "state": change.state,
                    "error": change.error,
                },
            )
        )
