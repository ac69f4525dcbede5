"""The dry run: a rule, saved or not, evaluated over stored telemetry by the engine's own
state machine, to see when it would have fired and cleared before it goes live."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.service import at
from fleetcore.assets import service as assets
from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.devices.service import live_devices
from fleetcore.errors import Invalid, NotFound
from fleetcore.rules import service
from fleetcore.rules.conditions import DeviceView
from fleetcore.rules.index import LiveRule
from fleetcore.rules.machine import Step, Track, step
from fleetcore.rules.models import Rule, managed_by
from fleetcore.rules.schemas import DryRunEpisode, DryRunIn, DryRunOut
from fleetcore.telemetry.queries import Row, device_series, read_rows
from fleetcore.telemetry.query_schemas import time_range

MAX_DEVICES = 100
MAX_READINGS = 200_000


async def dry_run(session: AsyncSession, principal: Principal, data: DryRunIn) -> DryRunOut:
    """Episodes (opened, repeated, cleared) the rule would have had in [start, end)."""
    start, end = time_range(data.start, data.end)
    if data.rule_id is not None:
        rule = await service.get_rule(session, principal, data.rule_id)
        if managed_by(rule) is not None:
            raise Invalid(
                "this rule fires on plate reads, not telemetry: there is nothing to replay",
                code="RULE_MANAGED",
                details={"field": "rule_id"},
            )
    else:
        await service.check_scope(session, principal, data.model_dump(include=set(service.SCOPES)))
        rule = Rule(
            id=uuid.uuid4(),
            organization_id=principal.org_id,
            name="dry run",
            severity="info",
            device_id=data.device_id,
            profile_id=data.profile_id,
            asset_id=data.asset_id,
            condition=data.condition.model_dump(mode="json") if data.condition else {},
            clear_condition=(
                data.clear_condition.model_dump(mode="json") if data.clear_condition else None
            ),
            duration_s=data.duration_s,
        )
    live = LiveRule.of(rule)
    devices = await _devices(session, principal, rule, data.only_device_id)
    warmup = max(live.needs.windows.values(), default=0)
    episodes: list[DryRunEpisode] = []
    readings, truncated = 0, len(devices) > MAX_DEVICES
    for device_id in devices[:MAX_DEVICES]:
        series = await device_series(
            session,
            device_id,
            principal.org_id,
            [] if live.needs.any_key else sorted(live.needs.keys),
        )
        if not series:
            rows: list[Row] = []
        else:
            budget = MAX_READINGS - readings
            rows = await read_rows(session, series, start - warmup, end, limit=budget + 1)
            if len(rows) > budget:
                rows, truncated = rows[:budget], True
        readings += len(rows)
        episodes.extend(_replay(live, device_id, rows, start, end))
    episodes.sort(key=lambda e: (e.opened_at, str(e.device_id)))
    return DryRunOut(
        devices=min(len(devices), MAX_DEVICES),
        readings=readings,
        truncated=truncated,
        episodes=episodes,
    )


async def _devices(
    session: AsyncSession, principal: Principal, rule: Rule, only: uuid.UUID | None
) -> list[uuid.UUID]:
    query = live_devices(principal.org_id).with_only_columns(Device.id).order_by(Device.name)
    if rule.device_id is not None:
        query = query.where(Device.id == rule.device_id)
    elif rule.profile_id is not None:
        query = query.where(Device.profile_id == rule.profile_id)
    elif rule.asset_id is not None:
        tree = assets.subtree(principal.org_id, rule.asset_id)
        query = query.where(Device.asset_id.in_(select(tree.c.id)))
    if only is not None:
        query = query.where(Device.id == only)
    found = list((await session.scalars(query.limit(MAX_DEVICES + 1))).all())
    if only is not None and not found:
        raise NotFound(
            "the device is not in the rule's scope",
            code="DEVICE_NOT_FOUND",
            details={"field": "only_device_id"},
        )
    return found


def _moments(
    live: LiveRule, rows: list[Row], start: int, end: int
) -> Iterator[tuple[int, list[Row]]]:
    """Evaluation times in order: each reading time (its rows), and for "no data" rules the
    moments silence reaches each span, as the engine's timer would see them."""
    last = start
    i = 0
    while i < len(rows) or last < end:
        ts = rows[i].ts if i < len(rows) else end
        moments = {
            last + quiet + extra
            for quiet in live.needs.quiet_ms
            for extra in (0, live.compiled.duration_ms)
        }
        for moment in sorted(m for m in moments if m < ts):
            yield moment, []
        if i >= len(rows):
            return
        j = i
        while j < len(rows) and rows[j].ts == ts:
            j += 1
        yield ts, rows[i:j]
        last, i = ts, j


def _replay(
    live: LiveRule, device_id: uuid.UUID, rows: list[Row], start: int, end: int
) -> list[DryRunEpisode]:
    view = DeviceView(since=start)
    track = Track()
    windows = live.needs.windows
    episodes: list[DryRunEpisode] = []
    for now, group in _moments(live, rows, start, end):
        for row in group:
            view.update(row.key, row.ts, row.value, windows.get(row.key))
        if now < start:
            continue  # warm-up: rate windows fill, nothing fires
        result = step(live.compiled, track, view, now)
        values = {k: view.values[k][1] for k in sorted(live.needs.keys) if k in view.values}
        if result is Step.OPENED:
            episodes.append(
                DryRunEpisode(
                    device_id=device_id, opened_at=at(now), cleared_at=None, count=1, values=values
                )
            )
        elif result is Step.REPEATED and episodes:
            episodes[-1].count += 1
        elif result is Step.CLEARED and episodes:
            episodes[-1].cleared_at = at(now)
    return episodes
