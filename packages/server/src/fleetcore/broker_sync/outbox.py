"""Staging: a device's credential change becomes an outbox row in the change's transaction.

A committed change always has its row and a rolled-back one has none, so the broker can lag
the database but never miss a change (the dispatcher applies the rows after the commit). The
token is stored encrypted (AES-256-GCM, key derived from the secret key by HKDF, the device id
as associated data: a ciphertext moved to another device's row does not decrypt) and wiped
once applied.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from fleetcore.auth.security import derive_key
from fleetcore.broker_sync.models import BrokerCredentialOutbox
from fleetcore.db import utcnow
from fleetcore.devices.credential_events import CredentialEvent

_NONCE_BYTES = 12
_WAKE_PENDING = "fleetcore.broker_sync.wake"


class SecretBox:
    """Encrypts a device token for the outbox; only the dispatcher decrypts it."""

    def __init__(self, app_secret: str) -> None:
        self._aead = AESGCM(derive_key(app_secret, b"fleetcore broker credential outbox v1"))

    def encrypt(self, token: str, device_id: uuid.UUID) -> str:
        """The token as text to store (nonce + ciphertext, base64)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, token.encode(), device_id.bytes)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, stored: str, device_id: uuid.UUID) -> str:
        """The token back; ValueError if the secret key changed or the row was tampered with."""
        raw = base64.urlsafe_b64decode(stored.encode())
        try:
            return self._aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], device_id.bytes
            ).decode()
        except InvalidTag:
            raise ValueError("the staged token does not decrypt with this secret key") from None


class OutboxStager:
    """The devices domain's credential listener: stages rows, wakes the dispatcher on commit."""

    def __init__(self, box: SecretBox, wake: Callable[[], None]) -> None:
        self.box = box
        self.wake = wake

    async def __call__(self, session: AsyncSession, events: Sequence[CredentialEvent]) -> None:
        now = utcnow()
        rows = [
            {
                "organization_id": e.organization_id,
                "device_id": e.device_id,
                "action": str(e.action),
                "secret": None if e.token is None else self.box.encrypt(e.token, e.device_id),
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for e in events
        ]
        # One executemany: a 10,000-device import stages 10,000 rows.
        await session.execute(insert(BrokerCredentialOutbox), rows)
        if not session.info.get(_WAKE_PENDING):
            session.info[_WAKE_PENDING] = True
            event.listen(session.sync_session, "after_commit", self._after_commit, once=True)

    def _after_commit(self, session: Session) -> None:
        session.info.pop(_WAKE_PENDING, None)
        self.wake()
