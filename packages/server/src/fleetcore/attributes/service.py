"""Device attributes: users write server and shared keys, the device writes client keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from fleetcore.attributes import signals
from fleetcore.attributes.models import DeviceAttribute, DeviceAttributeVersion
from fleetcore.attributes.schemas import (
    KEY_PATTERN,
    MAX_KEYS,
    AttributeOut,
    AttributeScope,
    DesiredOut,
    DeviceAttributesOut,
    ScopeOut,
    SyncState,
    canonical_json,
    check_values,
)
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.devices.models import Device
from fleetcore.devices.service import get_device
from fleetcore.errors import Forbidden, Invalid, NotFound


async def _rows(
    session: AsyncSession, device_id: uuid.UUID, scope: AttributeScope | None = None
) -> list[DeviceAttribute]:
    query = select(DeviceAttribute).where(DeviceAttribute.device_id == device_id)
    if scope is not None:
        query = query.where(DeviceAttribute.scope == scope.value)
    return list((await session.scalars(query.order_by(DeviceAttribute.key))).all())


async def _version(session: AsyncSession, device_id: uuid.UUID, scope: AttributeScope) -> int:
    version = await session.scalar(
        select(DeviceAttributeVersion.version).where(
            DeviceAttributeVersion.device_id == device_id,
            DeviceAttributeVersion.scope == scope.value,
        )
    )
    return version or 0


async def _lock_version(
    session: AsyncSession, device_id: uuid.UUID, scope: AttributeScope
) -> DeviceAttributeVersion:
    """The scope's counter row, created if missing and locked (PostgreSQL) until commit."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    await session.execute(
        insert(DeviceAttributeVersion)
        .values(device_id=device_id, scope=scope.value, version=0, updated_at=utcnow())
        .on_conflict_do_nothing()
    )
    row = await session.scalar(
        select(DeviceAttributeVersion)
        .where(
            DeviceAttributeVersion.device_id == device_id,
            DeviceAttributeVersion.scope == scope.value,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


@dataclass(slots=True)
class _Change:
    version: int
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def _apply(
    session: AsyncSession, device_id: uuid.UUID, scope: AttributeScope, values: dict[str, Any]
) -> _Change:
    """Merge `values` into the scope (null deletes); bump its version if anything changed."""
    check_values(values)
    counter = await _lock_version(session, device_id, scope)
    current = {row.key: row for row in await _rows(session, device_id, scope)}
    remaining = len(current) - sum(1 for k, v in values.items() if v is None and k in current)
    for key in (k for k, v in values.items() if v is not None and k not in current):
        remaining += 1
        if remaining > MAX_KEYS:
            raise Invalid(
                f"attribute {key!r} would exceed {MAX_KEYS} keys in the {scope.value} scope",
                code="TOO_MANY_ATTRIBUTES",
                details={"key": key, "max_keys": MAX_KEYS},
            )
    change = _Change(version=counter.version + 1)
    for key, value in values.items():
        row = current.get(key)
        if value is None:
            if row is not None:
                await session.delete(row)
                change.deleted.append(key)
        elif row is None:
            session.add(
                DeviceAttribute(
                    device_id=device_id,
                    scope=scope.value,
                    key=key,
                    value=value,
                    version=change.version,
                )
            )
            change.changed.append(key)
        elif canonical_json(row.value) != canonical_json(value):
            row.value = value
            flag_modified(row, "value")  # the ORM thinks 1 == True == 1.0 and would skip it
            row.version = change.version
            change.changed.append(key)
    if change.changed or change.deleted:
        counter.version = change.version
        if scope in (AttributeScope.SHARED, AttributeScope.CLIENT):
            signals.note(
                session,
                signals.SharedChange(
                    device_id,
                    change.version,
                    {key: values[key] for key in change.changed},
                    tuple(change.deleted),
                    scope.value,
                ),
            )
    else:
        change.version = counter.version
    return change


def _audit(
    session: AsyncSession,
    principal: Principal | None,
    device: Device,
    scope: AttributeScope,
    change: _Change,
    *,
    action: str = "attributes.update",
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=device.organization_id,
        target_type="device",
        target_id=device.id,
        details={
            "scope": scope.value,
            "version": change.version,
            "changed": change.changed,
            "deleted": change.deleted,
        },
        actor_type=None if principal else "device",
        actor_id=None if principal else str(device.id),
    )


def _require_write(principal: Principal, scope: AttributeScope) -> None:
    if scope is AttributeScope.CLIENT:
        raise Forbidden(
            "client attributes are reported by the device itself", code="CLIENT_SCOPE_READ_ONLY"
        )
    principal.require(Role.MANAGER)


async def _scope_out(
    session: AsyncSession, device_id: uuid.UUID, scope: AttributeScope
) -> ScopeOut:
    rows = await _rows(session, device_id, scope)
    return ScopeOut(
        device_id=device_id,
        scope=scope,
        version=await _version(session, device_id, scope),
        values={row.key: row.value for row in rows},
        attributes=[AttributeOut.model_validate(row) for row in rows],
    )


async def get_attributes(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID
) -> DeviceAttributesOut:
    """Every scope of a device, with the desired (shared) against reported (client) state."""
    device = await get_device(session, principal, device_id)
    scopes: dict[str, dict[str, Any]] = {scope.value: {} for scope in AttributeScope}
    for row in await _rows(session, device.id):
        scopes[row.scope][row.key] = row.value
    shared, client = scopes[AttributeScope.SHARED], scopes[AttributeScope.CLIENT]
    diff = [
        SyncState(
            key=key,
            desired=desired,
            reported=client.get(key),
            in_sync=key in client and canonical_json(client[key]) == canonical_json(desired),
        )
        for key, desired in shared.items()
    ]
    return DeviceAttributesOut(
        device_id=device.id,
        server=scopes[AttributeScope.SERVER],
        shared=shared,
        client=client,
        shared_version=await _version(session, device.id, AttributeScope.SHARED),
        desired_vs_reported=diff,
    )


async def get_scope(
    session: AsyncSession, principal: Principal, device_id: uuid.UUID, *, scope: AttributeScope
) -> ScopeOut:
    """One scope of a device's attributes."""
    device = await get_device(session, principal, device_id)
    return await _scope_out(session, device.id, scope)


async def update_scope(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    scope: AttributeScope,
    values: dict[str, Any],
) -> ScopeOut:
    """Merge keys into a server or shared scope (managers); a null value deletes the key."""
    _require_write(principal, scope)
    device = await get_device(session, principal, device_id)
    change = await _apply(session, device.id, scope, values)
    if change.changed or change.deleted:
        _audit(session, principal, device, scope, change)
    await session.commit()  # also ends the lock on the version row
    return await _scope_out(session, device.id, scope)


async def delete_attribute(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    scope: AttributeScope,
    key: str,
) -> None:
    """Remove one key of a server or shared scope (managers)."""
    _require_write(principal, scope)
    device = await get_device(session, principal, device_id)
    change = (
        await _apply(session, device.id, scope, {key: None}) if KEY_PATTERN.fullmatch(key) else None
    )
    if change is None or not change.deleted:
        raise NotFound("attribute not found", code="ATTRIBUTE_NOT_FOUND", details={"key": key})
    _audit(session, principal, device, scope, change, action="attributes.delete")
    await session.commit()


async def merge_client_attributes(
    session: AsyncSession, device: Device, *, values: dict[str, Any]
) -> None:
    """The device merges its reported (client) attributes; a null value deletes the key.
    Committed; nothing is read back (MQTT answers with a PUBACK only)."""
    change = await _apply(session, device.id, AttributeScope.CLIENT, values)
    if change.changed or change.deleted:
        _audit(session, None, device, AttributeScope.CLIENT, change)
    await session.commit()


async def report_client_attributes(
    session: AsyncSession, device: Device, *, values: dict[str, Any]
) -> ScopeOut:
    """merge_client_attributes, then the scope as it is now (the HTTP answer)."""
    await merge_client_attributes(session, device, values=values)
    return await _scope_out(session, device.id, AttributeScope.CLIENT)


async def device_values(
    session: AsyncSession,
    device_id: uuid.UUID,
    scope: AttributeScope,
    keys: set[str] | None = None,
) -> dict[str, Any]:
    """A device's values in one scope (only `keys` when given), for device-facing answers."""
    rows = await _rows(session, device_id, scope)
    return {row.key: row.value for row in rows if keys is None or row.key in keys}


async def shared_version(session: AsyncSession, device_id: uuid.UUID) -> int:
    """The version of a device's shared (desired) attributes."""
    return await _version(session, device_id, AttributeScope.SHARED)


async def desired_state(session: AsyncSession, device_id: uuid.UUID) -> dict[str, Any]:
    """The shared attributes a device should apply, and a version they are at least as new as.

    The version is read before the values, never after: two statements see two snapshots
    (PostgreSQL, read committed), and values read before a change committed with the version
    read after it would name the old values by the new version, so a device long-polling
    past that version would never hear of the change. This order can only name newer values
    by an older version, which makes the device ask once more.
    """
    version = await _version(session, device_id, AttributeScope.SHARED)
    rows = await _rows(session, device_id, AttributeScope.SHARED)
    return {
        "device_id": device_id,
        "shared": {row.key: row.value for row in rows},
        "shared_version": version,
    }


async def desired_for_device(session: AsyncSession, device: Device) -> DesiredOut:
    """The shared attributes a device should apply, and their version."""
    return DesiredOut.model_validate(await desired_state(session, device.id))


async def apply_shared(
    session: AsyncSession,
    device: Device,
    values: dict[str, Any],
    *,
    actor: Principal | None,
    action: str = "attributes.update",
) -> None:
    """Merge keys into a device's shared (desired) scope for another domain (OTA): the
    caller has checked the right to and commits; pushed to the device after the commit."""
    change = await _apply(session, device.id, AttributeScope.SHARED, values)
    if change.changed or change.deleted:
        audit.record(
            session,
            action=action,
            actor=actor,
            organization_id=device.organization_id,
            target_type="device",
            target_id=device.id,
            details={
                "scope": AttributeScope.SHARED.value,
                "version": change.version,
                "changed": change.changed,
                "deleted": change.deleted,
            },
            actor_type=None if actor else "system",
            actor_id=None if actor else action.split(".", 1)[0],
        )


async def reported(
    session: AsyncSession, device_ids: list[uuid.UUID], keys: set[str]
) -> dict[uuid.UUID, dict[str, tuple[Any, int]]]:
    """Client values of these keys per device, each with the scope version it changed at."""
    if not device_ids:
        return {}
    rows = await session.execute(
        select(
            DeviceAttribute.device_id,
            DeviceAttribute.key,
            DeviceAttribute.value,
            DeviceAttribute.version,
        ).where(
            DeviceAttribute.device_id.in_(device_ids),
            DeviceAttribute.scope == AttributeScope.CLIENT.value,
            DeviceAttribute.key.in_(keys),
        )
    )
    found: dict[uuid.UUID, dict[str, tuple[Any, int]]] = {}
    for device_id, key, value, version in rows:
        found.setdefault(device_id, {})[key] = (value, version)
    return found


async def client_version(session: AsyncSession, device_id: uuid.UUID) -> int:
    """The version of a device's client (reported) attributes."""
    return await _version(session, device_id, AttributeScope.CLIENT)
