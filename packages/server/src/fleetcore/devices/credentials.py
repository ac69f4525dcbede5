"""Device access tokens: issued once, stored as SHA-256, revoked at once on rotation."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.security import new_token, token_hash
from fleetcore.db import utcnow
from fleetcore.devices.models import Device, DeviceCredential

TOKEN_PREFIX = "fcd_"  # noqa: S105 (a prefix, not a secret)


def issue_token() -> tuple[str, str]:
    """A new device token and its hash; only the hash is ever stored."""
    token = new_token(TOKEN_PREFIX)
    return token, token_hash(token)


def new_credential() -> tuple[DeviceCredential, str]:
    """A fresh credential row (unattached) and its token."""
    token, hashed = issue_token()
    return DeviceCredential(token_hash=hashed), token


async def revoke_all(session: AsyncSession, device_id: uuid.UUID) -> None:
    """Revoke every live token of a device."""
    await session.execute(
        update(DeviceCredential)
        .where(DeviceCredential.device_id == device_id, DeviceCredential.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def replace_token(session: AsyncSession, device: Device) -> str:
    """Revoke the device's tokens and add a new one; the caller commits."""
    await revoke_all(session, device.id)
    credential, token = new_credential()
    credential.device_id = device.id
    session.add(credential)
    return token
