"""Rollouts: create (targets, stages, the first stage assigned), read, pause, resume,
abort and roll back.

Concurrency rules: a device is in one open rollout per kind. The check before creating
names the busy devices; the database holds the rule when two creations race (each row of an
open rollout carries `open_kind`, unique per device where set: the later commit fails and is
told 409), and `release` clears it when the rollout ends. Every status change is one
conditional UPDATE on the rollout (``WHERE status IN <the states it may leave>``); of a
pause and an abort racing, or two job runs advancing the same stage, one matches and the
other is told (409) or does nothing.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets.models import Asset
from fleetcore.assets.service import subtree
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.devices.models import Device, DeviceLabel, DeviceProfile
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.live.hub import LiveHub
from fleetcore.ota import assignment, chunk_cache, progress
from fleetcore.ota.models import (
    DeviceState,
    OtaPackage,
    OtaRollout,
    OtaRolloutDevice,
    RolloutStatus,
)
from fleetcore.ota.packages import get_package
from fleetcore.ota.schemas import (
    RolloutDeviceOut,
    RolloutIn,
    RolloutOut,
    StageOut,
    Strategy,
    Target,
)
from fleetcore.pagination import page_of, paginate


def stage_sizes(strategy: Strategy, devices: int) -> list[int]:
    """Devices per stage: every device in one stage, cumulative percentages, or batches
    whose last size repeats; empty stages dropped."""
    if strategy.type == "all" or devices == 0:
        return [devices] if devices else []
    sizes: list[int] = []
    if strategy.unit == "percent":
        done = 0
        for percent in strategy.stages:
            upto = min(devices, math.ceil(devices * percent / 100))
            if upto > done:
                sizes.append(upto - done)
                done = upto
        return sizes
    left, index = devices, 0
    while left > 0:
        size = min(left, strategy.stages[min(index, len(strategy.stages) - 1)])
        sizes.append(size)
        left -= size
        index += 1
    return sizes


async def _target_devices(
    session: AsyncSession, principal: Principal, target: Target, package: OtaPackage
) -> list[uuid.UUID]:
    org = principal.org_id
    query = select(Device.id).where(Device.organization_id == org, Device.deleted_at.is_(None))
    if target.profile_id is not None:
        profile = await session.scalar(
            select(DeviceProfile.id).where(
                DeviceProfile.id == target.profile_id, DeviceProfile.organization_id == org
            )
        )
        if profile is None:
            raise NotFound("device profile not found", code="PROFILE_NOT_FOUND")
        query = query.where(Device.profile_id == target.profile_id)
    elif target.asset_id is not None:
        asset = await session.scalar(
            select(Asset.id).where(Asset.id == target.asset_id, Asset.organization_id == org)
        )
        if asset is None:
            raise NotFound("asset not found", code="ASSET_NOT_FOUND")
        tree = subtree(org, target.asset_id)
        query = query.where(Device.asset_id.in_(select(tree.c.id)))
    elif target.labels:
        labels = sorted(set(target.labels))
        having = (
            select(DeviceLabel.device_id)
            .where(DeviceLabel.label.in_(labels))
            .group_by(DeviceLabel.device_id)
            .having(func.count() == len(labels))
        )
        query = query.where(Device.id.in_(having))
    else:
        wanted = set(target.device_ids or ())
        query = query.where(Device.id.in_(wanted))
    if package.profile_id is not None:  # a package made for one profile goes to it alone
        query = query.where(Device.profile_id == package.profile_id)
    found = sorted((await session.scalars(query)).all())
    if target.device_ids and len(found) != len(set(target.device_ids)):
        missing = sorted(set(target.device_ids) - set(found))
        raise NotFound(
            "device not found (or not of the package's profile)",
            code="DEVICE_NOT_FOUND",
            details={"device_ids": [str(d) for d in missing[:20]]},
        )
    return found


async def _busy(session: AsyncSession, kind: str, device_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """Devices already in an open rollout of the same kind."""
    busy: list[uuid.UUID] = []
    for start in range(0, len(device_ids), 500):
        batch = device_ids[start : start + 500]
        busy += (
            await session.scalars(
                select(OtaRolloutDevice.device_id)
                .join(OtaRollout, OtaRollout.id == OtaRolloutDevice.rollout_id)
                .join(OtaPackage, OtaPackage.id == OtaRollout.package_id)
                .where(
                    OtaRolloutDevice.device_id.in_(batch),
                    OtaRollout.status.in_(RolloutStatus.OPEN),
                    OtaPackage.kind == kind,
                    OtaRolloutDevice.state.not_in((DeviceState.CANCELLED, DeviceState.ROLLED_BACK)),
                )
            )
        ).all()
    return busy


_OPEN_INDEX = "ux_ota_rollout_devices_open"


def _device_busy(kind: str, busy: list[uuid.UUID]) -> Conflict:
    count = f"{len(busy)} of these devices are" if busy else "a device is"
    return Conflict(
        f"{count} in another open {kind} rollout",
        code="OTA_DEVICE_BUSY",
        details={"device_ids": [str(d) for d in busy[:20]]},
    )


async def release(session: AsyncSession, rollout_id: uuid.UUID) -> None:
    """The rollout ended: its devices may join another rollout of the kind. The caller commits."""
    await session.execute(
        update(OtaRolloutDevice)
        .where(OtaRolloutDevice.rollout_id == rollout_id, OtaRolloutDevice.open_kind.is_not(None))
        .values(open_kind=None)
        .execution_options(synchronize_session=False)
    )


async def create_rollout(
    session: AsyncSession, principal: Principal, data: RolloutIn, hub: LiveHub
) -> OtaRollout:
    """Assign a package to its target devices, the first stage at once (managers)."""
    principal.require(Role.MANAGER)
    package = await get_package(session, principal, data.package_id)
    devices = await _target_devices(session, principal, data.target, package)
    if not devices:
        raise Invalid(
            "the target holds no device (of the package's profile, if it has one)",
            code="OTA_NO_DEVICES",
            details={"field": "target"},
        )
    busy = await _busy(session, package.kind, devices)
    if busy:
        raise _device_busy(package.kind, busy)
    sizes = stage_sizes(data.strategy, len(devices))
    rollout = OtaRollout(
        organization_id=principal.org_id,
        package_id=package.id,
        name=data.name or f"{package.title} {package.version}",
        target=data.target.model_dump(mode="json", exclude_none=True),
        strategy=data.strategy.model_dump(mode="json"),
        stage_sizes=sizes,
        max_failure_rate=data.max_failure_rate,
        status=RolloutStatus.ACTIVE,
        current_stage=0,
    )
    session.add(rollout)
    await session.flush()
    stage, left = 0, sizes[0]
    rows = []
    for device_id in devices:
        if left == 0:
            stage += 1
            left = sizes[stage]
        rows.append(
            OtaRolloutDevice(
                rollout_id=rollout.id, device_id=device_id, stage=stage, open_kind=package.kind
            )
        )
        left -= 1
    session.add_all(rows)
    kind = package.kind  # a failed flush expires what the session holds
    try:
        await session.flush()
    except IntegrityError as exc:
        if "open_kind" not in str(exc.orig) and _OPEN_INDEX not in str(exc.orig):
            raise
        # Another rollout for some of these devices committed since the check above.
        await session.rollback()
        raise _device_busy(kind, []) from None
    await start_stage(session, rollout, package, 0, actor=principal)
    audit.record(
        session,
        action="ota.rollout.create",
        actor=principal,
        organization_id=principal.org_id,
        target_type="ota_rollout",
        target_id=rollout.id,
        details={"package_id": str(package.id), "devices": len(devices), "stages": sizes},
    )
    await session.commit()
    await progress.publish_rollout(session, hub, rollout)
    return rollout


async def start_stage(
    session: AsyncSession,
    rollout: OtaRollout,
    package: OtaPackage,
    stage: int,
    *,
    actor: Principal | None,
) -> int:
    """Queue the stage's pending devices; returns how many. The caller commits."""
    rows = (
        await session.scalars(
            select(OtaRolloutDevice).where(
                OtaRolloutDevice.rollout_id == rollout.id,
                OtaRolloutDevice.stage == stage,
                OtaRolloutDevice.state == DeviceState.PENDING,
            )
        )
    ).all()
    queued = 0
    for row in rows:
        queued += await assignment.assign(session, row, package, actor=actor)
    return queued


async def _get(session: AsyncSession, principal: Principal, rollout_id: uuid.UUID) -> OtaRollout:
    rollout = await session.scalar(
        select(OtaRollout).where(
            OtaRollout.id == rollout_id, OtaRollout.organization_id == principal.org_id
        )
    )
    if rollout is None:
        raise NotFound("rollout not found", code="OTA_ROLLOUT_NOT_FOUND")
    return rollout


async def describe(session: AsyncSession, rollout: OtaRollout) -> RolloutOut:
    """The rollout with its counts."""
    package = await session.get(OtaPackage, rollout.package_id)
    assert package is not None
    by_stage = await progress.counts(session, rollout.id)
    overall = progress.total(by_stage)
    return RolloutOut(
        id=rollout.id,
        name=rollout.name,
        package_id=package.id,
        kind=package.kind,
        title=package.title,
        version=package.version,
        target=rollout.target,
        strategy=rollout.strategy,
        max_failure_rate=rollout.max_failure_rate,
        status=rollout.status,
        paused_reason=rollout.paused_reason,
        current_stage=rollout.current_stage,
        devices=sum(overall.values()),
        counts={state: overall.get(state, 0) for state in DeviceState.ALL},
        failure_rate=round(progress.failure_rate(overall), 4),
        stages=[
            StageOut(stage=index, devices=size, counts=dict(by_stage.get(index, {})))
            for index, size in enumerate(rollout.stage_sizes)
        ],
        created_at=rollout.created_at,
        updated_at=rollout.updated_at,
    )


async def get_rollout(
    session: AsyncSession, principal: Principal, rollout_id: uuid.UUID
) -> RolloutOut:
    """A rollout with counts per state and stage (viewers)."""
    principal.require(Role.VIEWER)
    return await describe(session, await _get(session, principal, rollout_id))


async def list_rollouts(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> tuple[list[OtaRollout], str | None]:
    """The organization's rollouts, newest first (viewers)."""
    principal.require(Role.VIEWER)
    query = paginate(
        select(OtaRollout).where(OtaRollout.organization_id == principal.org_id),
        sort=OtaRollout.created_at,
        id_column=OtaRollout.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="created_at")


async def list_devices(
    session: AsyncSession,
    principal: Principal,
    rollout_id: uuid.UUID,
    *,
    state: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[RolloutDeviceOut], str | None]:
    """The rollout's devices, by device id, optionally of one state (viewers)."""
    principal.require(Role.VIEWER)
    rollout = await _get(session, principal, rollout_id)
    query = select(OtaRolloutDevice).where(OtaRolloutDevice.rollout_id == rollout.id)
    if state is not None:
        query = query.where(OtaRolloutDevice.state == state)
    query = paginate(
        query,
        sort=OtaRolloutDevice.device_id,
        id_column=OtaRolloutDevice.device_id,
        cursor=cursor,
        limit=limit,
    )
    rows = (await session.scalars(query)).all()
    page, next_cursor = page_of(rows, limit=limit, sort_attr="device_id", id_attr="device_id")
    return [RolloutDeviceOut.model_validate(row) for row in page], next_cursor


async def _move(
    session: AsyncSession,
    rollout: OtaRollout,
    *,
    expected: tuple[str, ...],
    to: str,
    **values: Any,
) -> None:
    status_was = rollout.status
    result = await session.execute(
        update(OtaRollout)
        .where(OtaRollout.id == rollout.id, OtaRollout.status.in_(expected))
        .values(status=to, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if int(result.rowcount or 0) != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Conflict(
            f"the rollout is not {' or '.join(expected)}",
            code="OTA_ROLLOUT_STATE",
            details={"status": status_was},
        )


async def _audited(
    session: AsyncSession, principal: Principal, rollout: OtaRollout, action: str, hub: LiveHub
) -> RolloutOut:
    audit.record(
        session,
        action=f"ota.rollout.{action}",
        actor=principal,
        organization_id=principal.org_id,
        target_type="ota_rollout",
        target_id=rollout.id,
    )
    await session.commit()
    chunk_cache.assignments_changed()  # paused, aborted...: MQTT chunks look again
    await session.refresh(rollout)
    await progress.publish_rollout(session, hub, rollout)
    return await describe(session, rollout)


async def pause(
    session: AsyncSession, principal: Principal, rollout_id: uuid.UUID, hub: LiveHub
) -> RolloutOut:
    """Stop starting stages (operators); devices already assigned go on."""
    principal.require(Role.OPERATOR)
    rollout = await _get(session, principal, rollout_id)
    await _move(
        session,
        rollout,
        expected=(RolloutStatus.ACTIVE,),
        to=RolloutStatus.PAUSED,
        paused_reason="paused by hand",
    )
    return await _audited(session, principal, rollout, "pause", hub)


async def resume(
    session: AsyncSession, principal: Principal, rollout_id: uuid.UUID, hub: LiveHub
) -> RolloutOut:
    """Go on (operators); failures so far are acknowledged: a new one may pause it again."""
    principal.require(Role.OPERATOR)
    rollout = await _get(session, principal, rollout_id)
    failed = progress.total(await progress.counts(session, rollout.id))[DeviceState.FAILED]
    await _move(
        session,
        rollout,
        expected=(RolloutStatus.PAUSED,),
        to=RolloutStatus.ACTIVE,
        paused_reason=None,
        failures_acknowledged=failed,
    )
    return await _audited(session, principal, rollout, "resume", hub)


async def abort(
    session: AsyncSession, principal: Principal, rollout_id: uuid.UUID, hub: LiveHub
) -> RolloutOut:
    """End it (managers): devices not started are cancelled, devices in flight get back what
    they had; devices already updated stay updated."""
    principal.require(Role.MANAGER)
    rollout = await _get(session, principal, rollout_id)
    package = await session.get(OtaPackage, rollout.package_id)
    assert package is not None
    await _move(session, rollout, expected=RolloutStatus.OPEN, to=RolloutStatus.ABORTED)
    await release(session, rollout.id)
    rows = (
        await session.scalars(
            select(OtaRolloutDevice).where(
                OtaRolloutDevice.rollout_id == rollout.id,
                OtaRolloutDevice.state.in_((DeviceState.PENDING, *DeviceState.IN_FLIGHT)),
            )
        )
    ).all()
    for row in rows:
        if row.state != DeviceState.PENDING:
            await assignment.restore(session, row, package.kind, actor=principal)
        row.state = DeviceState.CANCELLED
    return await _audited(session, principal, rollout, "abort", hub)


async def rollback(
    session: AsyncSession, principal: Principal, rollout_id: uuid.UUID, hub: LiveHub
) -> RolloutOut:
    """Assign every device it reached the version it had before (managers)."""
    principal.require(Role.MANAGER)
    rollout = await _get(session, principal, rollout_id)
    package = await session.get(OtaPackage, rollout.package_id)
    assert package is not None
    await _move(
        session,
        rollout,
        expected=(*RolloutStatus.OPEN, RolloutStatus.COMPLETED, RolloutStatus.ABORTED),
        to=RolloutStatus.ROLLED_BACK,
    )
    await release(session, rollout.id)
    rows = (
        await session.scalars(
            select(OtaRolloutDevice).where(
                OtaRolloutDevice.rollout_id == rollout.id,
                OtaRolloutDevice.state != DeviceState.ROLLED_BACK,
            )
        )
    ).all()
    for row in rows:
        if row.state == DeviceState.PENDING or row.assigned_at is None:
            row.state = DeviceState.CANCELLED
            continue
        await assignment.restore(session, row, package.kind, actor=principal)
        row.state = DeviceState.ROLLED_BACK
    return await _audited(session, principal, rollout, "rollback", hub)
