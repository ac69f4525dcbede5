"""The safety gate on every command: when a device's profile has a safety policy, the
command is checked with fleetcore.safety.validate against the device's state as stored,
before it is inserted (docs/safety.md, "The gate").

The context is read from the database in the transaction that then inserts the command,
with the device's validations serialised (`guard`): two concurrent commands cannot both
measure the hour's movement without the other and both pass an hourly limit.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.models import OPEN_STATUSES, Alert
from fleetcore.attributes.models import DeviceAttribute
from fleetcore.commands.models import DeviceCommand
from fleetcore.devices.models import Device
from fleetcore.errors import Invalid
from fleetcore.safety.inputs import (
    EFFECTIVE_STATUSES,
    ActiveAlert,
    PastCommand,
    SafetyContext,
)
from fleetcore.safety.motion import WINDOW, key_of
from fleetcore.safety.policy import SafetyPolicy
from fleetcore.safety.verdict import Verdict
from fleetcore.telemetry.models import LATEST, Series
from fleetcore.telemetry.models import TelemetryKey as Key
from fleetcore.telemetry.packed import newest_number
from fleetcore_protocol.telemetry import Kind

# The latest earlier command per hourly-limited key is looked for among this many of the
# newest effective commands of the methods that set it (before the hour).
BASELINE_CANDIDATES = 50


class SafetyRefused(Invalid):
    """The safety validator refused the command: nothing was stored or sent."""

    default_code = "SAFETY_REFUSED"

    def __init__(self, verdict: Verdict) -> None:
        codes = ", ".join(verdict.codes)
        super().__init__(
            f"refused by the device profile's safety policy: {codes}",
            details={"reasons": [reason.as_dict() for reason in verdict.reasons]},
        )
        self.verdict = verdict


# -- per-device serialisation --------------------------------------------------------------

# SQLite: one process writes, so an asyncio lock per device serialises its validations.
# Weak values: a lock lives while a validation holds or waits for it, then goes, so the map
# holds only the devices being commanded right now (bounded memory however many devices).
_LOCKS: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = weakref.WeakValueDictionary()


@asynccontextmanager
async def guard(session: AsyncSession, device_id: uuid.UUID) -> AsyncIterator[uuid.UUID | None]:
    """Serialise the device's validations until the caller's transaction ends; yields the
    device's profile id as read under the guard (None: no profile or no device).

    PostgreSQL (any number of processes): the device row is locked (SELECT ... FOR UPDATE)
    in the session's transaction, which must validate, insert and commit (or roll back)
    before the `async with` ends: a second command for the device waits at the lock and then
    reads the first one in its context. SQLite: the asyncio lock of the device, held until the
    block ends (the caller commits inside it).
    """
    query = select(Device.profile_id).where(Device.id == device_id)
    if session.get_bind().dialect.name == "postgresql":
        yield await session.scalar(query.with_for_update())
        return
    lock = _LOCKS.get(device_id)
    if lock is None:
        lock = _LOCKS.setdefault(device_id, asyncio.Lock())
    async with lock:  # the local name keeps the lock alive while it is held
        yield await session.scalar(query)


# -- the context, read from the database ---------------------------------------------------


def _watched_keys(policy: SafetyPolicy) -> set[str]:
    """Keys whose current value the validator may use: limited setpoints and interlock params."""
    keys = {
        key_of(name, rule)
        for method in policy.methods.values()
        for name, rule in method.params.items()
        if rule.limits_motion
    }
    for lock in policy.interlocks:
        if lock.param is None:
            continue
        for method_name, method in policy.methods.items():
            if lock.method in (None, method_name) and lock.param in method.params:
                keys.add(key_of(lock.param, method.params[lock.param]))
    return keys


async def _values(session: AsyncSession, device_id: uuid.UUID, keys: set[str]) -> dict[str, Any]:
    """The current value of each key: the newest telemetry reading (any kind), else the
    device's client attribute of that name. Telemetry wins: it is measured and timed; a
    client attribute is what the device last reported of itself. Server and shared
    attributes are never used: they say what people want, not where the device is."""
    if not keys:
        return {}
    newest: dict[str, tuple[int, Any]] = {}

    def offer(name: str, ts: int, value: Any) -> None:
        if name not in newest or newest[name][0] < ts:
            newest[name] = (ts, value)

    series = (
        select(Series.id, Key.name, Key.kind)
        .join(Key, Key.id == Series.key_id)
        .where(Series.device_id == device_id, Key.name.in_(sorted(keys)))
    )
    found = (await session.execute(series)).all()
    if found:
        latest = select(
            LATEST.c.series_id,
            LATEST.c.ts,
            LATEST.c.num,
            LATEST.c.text,
            LATEST.c.bool,
            LATEST.c.json,
        ).where(LATEST.c.series_id.in_([row.id for row in found]))
        names = {row.id: (row.name, row.kind) for row in found}
        for series_id, ts, *columns in (await session.execute(latest)).all():
            name, kind = names[series_id]
            offer(name, ts, columns[kind - 1])
        # On PostgreSQL numeric latest values are merged from the writer's log up to a second
        # behind (telemetry/pg_sql.py): the raw table's newest reading is the truth.
        for row in found:
            if row.kind != Kind.NUMBER:
                continue
            stored = await newest_number(session, row.id)
            if stored is not None:
                offer(row.name, *stored)
    values = {name: value for name, (_, value) in newest.items()}
    missing = sorted(keys - values.keys())
    if missing:
        attributes = select(DeviceAttribute.key, DeviceAttribute.value).where(
            DeviceAttribute.device_id == device_id,
            DeviceAttribute.scope == "client",
            DeviceAttribute.key.in_(missing),
        )
        values.update({key: value for key, value in (await session.execute(attributes)).all()})
    return values


def _sets(policy: SafetyPolicy, key: str) -> dict[str, list[str]]:
    """The methods (with their param names) whose params set `key`."""
    found: dict[str, list[str]] = {}
    for method_name, method in policy.methods.items():
        names = [name for name, rule in method.params.items() if key_of(name, rule) == key]
        if names:
            found[method_name] = names
    return found


def _past(row: Any) -> PastCommand:
    params = row.params if isinstance(row.params, Mapping) else {}
    return PastCommand(at=row.created_at, method=row.method, params=params, status=row.status)


async def _recent(
    session: AsyncSession, device_id: uuid.UUID, policy: SafetyPolicy, now: datetime
) -> list[PastCommand]:
    """The device's commands of the policy's methods created in the last hour, plus for each
    hourly-limited key the latest earlier effective command that set it."""
    methods = sorted(policy.methods)
    if not methods:
        return []
    columns = (
        DeviceCommand.created_at,
        DeviceCommand.method,
        DeviceCommand.params,
        DeviceCommand.status,
    )
    since = now - WINDOW
    hour = (
        select(*columns)
        .where(
            DeviceCommand.device_id == device_id,
            DeviceCommand.method.in_(methods),
            DeviceCommand.created_at > since,
        )
        .order_by(DeviceCommand.created_at)
    )
    recent = [_past(row) for row in (await session.execute(hour)).all()]
    limited = {
        key_of(name, rule)
        for method in policy.methods.values()
        for name, rule in method.params.items()
        if rule.max_change_per_hour is not None
    }
    for key in sorted(limited):
        setters = _sets(policy, key)
        earlier = (
            select(*columns)
            .where(
                DeviceCommand.device_id == device_id,
                DeviceCommand.method.in_(sorted(setters)),
                DeviceCommand.status.in_(sorted(EFFECTIVE_STATUSES)),
                DeviceCommand.created_at <= since,
            )
            .order_by(DeviceCommand.created_at.desc())
            .limit(BASELINE_CANDIDATES)
        )
        for row in (await session.execute(earlier)).all():
            params = row.params if isinstance(row.params, Mapping) else {}
            if any(name in params for name in setters[row.method]):
                recent.append(_past(row))
                break
    return recent


def _alert_keys(details: object) -> list[str | None]:
    values = details.get("values") if isinstance(details, Mapping) else None
    keys = sorted(k for k in values if isinstance(k, str)) if isinstance(values, Mapping) else []
    return list(keys) or [None]


async def _alerts(session: AsyncSession, device_id: uuid.UUID) -> list[ActiveAlert]:
    """The device's open alerts; an alert about several keys is listed once per key, so an
    interlock on any of them matches it."""
    query = select(Alert.severity, Alert.name, Alert.details).where(
        Alert.device_id == device_id, Alert.status.in_(OPEN_STATUSES)
    )
    return [
        ActiveAlert(severity=severity, rule=name, key=key)
        for severity, name, details in (await session.execute(query)).all()
        for key in _alert_keys(details)
    ]


async def _hour_start(
    session: AsyncSession, device_id: uuid.UUID, policy: SafetyPolicy, now: datetime
) -> dict[str, Any]:
    """Each hourly-limited key's newest numeric reading at or before now - 1 h: where the
    sliding hour began when no earlier command set the key."""
    keys = sorted(
        {
            key_of(name, rule)
            for method in policy.methods.values()
            for name, rule in method.params.items()
            if rule.max_change_per_hour is not None
        }
    )
    if not keys:
        return {}
    cutoff = int((now - WINDOW).timestamp() * 1000)
    series = (
        select(Series.id, Key.name)
        .join(Key, Key.id == Series.key_id)
        .where(Series.device_id == device_id, Key.kind == int(Kind.NUMBER), Key.name.in_(keys))
    )
    found: dict[str, Any] = {}
    for series_id, name in (await session.execute(series)).all():
        stored = await newest_number(session, series_id, at_most=cutoff)
        if stored is not None:
            found[name] = stored[1]
    return found


async def context_for(
    session: AsyncSession, device_id: uuid.UUID, policy: SafetyPolicy, now: datetime
) -> SafetyContext:
    """The device as the validator sees it, read in the session's transaction."""
    return SafetyContext(
        now=now,
        values=await _values(session, device_id, _watched_keys(policy)),
        recent=await _recent(session, device_id, policy, now),
        alerts=await _alerts(session, device_id),
        hour_start=await _hour_start(session, device_id, policy, now),
    )
