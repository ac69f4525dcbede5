"""A short-lived cache of device-token lookups for the ingest hot path.

Telemetry requests arrive far more often than devices change, so the token -> (device,
profile rules) lookup is cached for a few seconds. Any ORM session that commits a change to
a device, a credential or a profile (rotation, disable, delete, re-provisioning, profile
edits: whatever service makes it) clears the cache in this process right after its commit,
so a revoked token stops working at once here. Other processes are told through the
`on_committed_here` hooks (fleetcore.cluster.credentials: a Redis message every process
receives within milliseconds, then `invalidate(from_elsewhere=True)`); TTL_S bounds how long
a process that missed it (Redis down) may still accept a revoked token.

A hit costs no database session (`device_of_token` opens one only on a miss); a miss of an
active device is one query (device, credential and profile joined, no ORM objects).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import bindparam, event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from fleetcore.auth.security import token_hash
from fleetcore.db import Database
from fleetcore.devices.deps import (
    MAX_TOKEN_LENGTH,
    _token_bearer,
    _token_header,
    authenticate_device,
)
from fleetcore.devices.models import (
    CREDENTIALS_UNCHANGED,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MQTT_BURST,
    DEFAULT_MQTT_RATE_PER_S,
    Device,
    DeviceCredential,
    DeviceProfile,
    DeviceStatus,
)
from fleetcore.errors import Unauthorized

TTL_S = 5.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class ProfileRules:
    """What ingest checks readings against (keys, out-of-range policy) and the MQTT limits."""

    telemetry_keys: list[dict[str, Any]]
    out_of_range: str
    mqtt_rate_per_s: float = DEFAULT_MQTT_RATE_PER_S
    mqtt_burst: int = DEFAULT_MQTT_BURST
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

    @classmethod
    def of(cls, profile: DeviceProfile | None) -> ProfileRules:
        """The rules of a profile, or the defaults for a device without one."""
        if profile is None:
            return cls([], "reject")
        return cls(
            list(profile.telemetry_keys),
            profile.out_of_range,
            profile.mqtt_rate_per_s,
            profile.mqtt_burst,
            profile.max_payload_bytes,
        )


@dataclass(frozen=True, slots=True)
class IngestDevice:
    """An authenticated device as ingest needs it: immutable, safe to share."""

    id: uuid.UUID
    organization_id: uuid.UUID
    profile: ProfileRules | None


_entries: dict[str, tuple[float, IngestDevice]] = {}


_listeners: list[Callable[[], None]] = []
_broadcasters: list[Callable[[], None]] = []


def on_invalidate(listener: Callable[[], None]) -> Callable[[], None]:
    """Also call `listener` whenever device credentials may have changed (e.g. so the MQTT
    broker re-checks its live sessions); returns a function to stop listening."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def on_committed_here(broadcaster: Callable[[], None]) -> Callable[[], None]:
    """Also call `broadcaster` when a change is committed in this process (not when another
    process reported one): how other processes learn of it. Returns a function to stop."""
    _broadcasters.append(broadcaster)
    return lambda: _broadcasters.remove(broadcaster)


def invalidate(*, from_elsewhere: bool = False) -> None:
    """Forget every cached lookup and tell the listeners (and, for a change committed in
    this process, the broadcasters)."""
    _entries.clear()
    for listener in list(_listeners):
        listener()
    if not from_elsewhere:
        for broadcaster in list(_broadcasters):
            broadcaster()


_WATCHED = (Device, DeviceCredential, DeviceProfile)
_STALE = "fleetcore_device_auth_stale"


@event.listens_for(Session, "after_flush")
def _note_changed_objects(session: Session, _: Any) -> None:
    changed = (*session.new, *session.dirty, *session.deleted)
    if any(isinstance(obj, _WATCHED) for obj in changed):
        session.info[_STALE] = True


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_changes(state: ORMExecuteState) -> None:
    if state.execution_options.get(CREDENTIALS_UNCHANGED):
        return
    if (state.is_update or state.is_delete) and any(
        mapper.class_ in _WATCHED for mapper in state.all_mappers
    ):
        state.session.info[_STALE] = True


@event.listens_for(Session, "after_commit")
def _invalidate_after_commit(session: Session) -> None:
    if session.info.pop(_STALE, False):
        invalidate()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_STALE, None)


async def ingest_device(session: AsyncSession, token: str) -> IngestDevice:
    """The device behind `token`, from the cache or the database (401 if not valid)."""
    hit = _cached(token)
    if hit is not None:
        return hit
    return await _look_up(session, token)


async def device_of_token(database: Database, token: str) -> IngestDevice:
    """As ingest_device, with a session opened only when the cache does not answer: the
    hot path (a device sending again within TTL_S) costs no session, connection or query."""
    hit = _cached(token)
    if hit is not None:
        return hit
    async with database.session() as session:
        return await _look_up(session, token)


def _cached(token: str) -> IngestDevice | None:
    hit = _entries.get(token_hash(token) if token else "")
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


# A miss is one query for what ingest needs (no ORM objects): devices that send less often
# than TTL_S (most, in a large fleet) miss on every message.
_LOOKUP = (
    select(
        Device.id,
        Device.organization_id,
        Device.status,
        Device.profile_id,
        DeviceProfile.telemetry_keys,
        DeviceProfile.out_of_range,
        DeviceProfile.mqtt_rate_per_s,
        DeviceProfile.mqtt_burst,
        DeviceProfile.max_payload_bytes,
    )
    .join(DeviceCredential, DeviceCredential.device_id == Device.id)
    .outerjoin(DeviceProfile, DeviceProfile.id == Device.profile_id)
    .where(
        DeviceCredential.token_hash == bindparam("token_hash"),
        DeviceCredential.revoked_at.is_(None),
        Device.deleted_at.is_(None),
    )
)


async def _look_up(session: AsyncSession, token: str) -> IngestDevice:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the device token is not valid", code="INVALID_DEVICE_TOKEN")
    row = (await session.execute(_LOOKUP, {"token_hash": token_hash(token)})).first()
    if row is None or row.status != DeviceStatus.ACTIVE:
        # Not found, disabled, or its first call (activated, once in its life): the full
        # check, which refuses or activates.
        device = await authenticate_device(session, token)
        profile = await session.get(DeviceProfile, device.profile_id) if device.profile_id else None
        found = IngestDevice(
            id=device.id,
            organization_id=device.organization_id,
            profile=ProfileRules.of(profile) if profile else None,
        )
    else:
        found = IngestDevice(
            id=row.id,
            organization_id=row.organization_id,
            profile=None
            if row.out_of_range is None  # no profile (the column is never null in one)
            else ProfileRules(
                list(row.telemetry_keys),
                row.out_of_range,
                row.mqtt_rate_per_s,
                row.mqtt_burst,
                row.max_payload_bytes,
            ),
        )
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    # Expiry spread over the last quarter of TTL_S: devices that started together (a
    # restart, a fleet switched on) would otherwise all miss at once, every TTL_S.
    expires = time.monotonic() + TTL_S * random.uniform(0.75, 1.0)  # noqa: S311 (not secret)
    _entries[token_hash(token) if token else ""] = (expires, found)
    return found


def header_token(request: Request) -> str:
    """The device token of X-Device-Token or Authorization: Bearer; 401 without one.

    Read from the headers directly rather than through FastAPI's security dependencies:
    the ingest routes document those schemes in their OpenAPI `security` instead."""
    headers = request.headers
    token = headers.get("x-device-token")
    if not token:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" else ""
    if not token:
        raise Unauthorized(
            "send the device token as X-Device-Token or Authorization: Bearer",
            code="DEVICE_TOKEN_REQUIRED",
        )
    return token


# What the routes that read the token themselves (header_token) document as their security.
DEVICE_TOKEN_SECURITY: list[dict[str, list[str]]] = [{"DeviceToken": []}, {"DeviceBearer": []}]


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def _from_headers(
    request: Request,
    header_token: Annotated[str | None, Depends(_token_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_token_bearer)],
) -> IngestDevice:
    token = header_token or (bearer.credentials if bearer is not None else None)
    if not token:
        raise Unauthorized(
            "send the device token as X-Device-Token or Authorization: Bearer",
            code="DEVICE_TOKEN_REQUIRED",
        )
    return await device_of_token(_database(request), token)


async def _from_path(token: str, request: Request) -> IngestDevice:
    return await device_of_token(_database(request), token)


HeaderIngestDevice = Annotated[IngestDevice, Depends(_from_headers)]
PathIngestDevice = Annotated[IngestDevice, Depends(_from_path)]
