"""Secrets: argon2id passwords, JWTs, and hashes of high-entropy tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from fleetcore.errors import Unauthorized

ISSUER = "fleetcore"
AUDIENCE = "fleetcore-api"
ALGORITHM = "HS256"
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHash((Argon2Hasher(),))
# Verified against when the account does not exist, so timing does not reveal that. Made by
# configure_hasher (the app calls it before serving), else at first use: not at import,
# where every process (CLI commands included) would pay a hash for nothing.
_dummy_hash: str | None = None


def _verify_dummy(password: str) -> None:
    global _dummy_hash
    if _dummy_hash is None:  # two threads may both make one: either serves
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    _hasher.verify(password, _dummy_hash)


def configure_hasher(*, time_cost: int, memory_kib: int) -> None:
    """Set argon2id cost (settings; tests lower it). Existing hashes keep verifying."""
    global _hasher, _dummy_hash
    _hasher = PasswordHash((Argon2Hasher(time_cost=time_cost, memory_cost=memory_kib),))
    _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    """argon2id hash, off the event loop (it takes ~80 ms of CPU)."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    """Constant-time check; with no hash, burns the same time and answers False."""
    if password_hash is None:
        await asyncio.to_thread(_verify_dummy, password)
        return False
    return await asyncio.to_thread(_hasher.verify, password, password_hash)


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """A random token with `nbytes` of entropy (≥128 bits), URL-safe."""
    return prefix + secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """SHA-256 of a high-entropy token: enough, since it cannot be guessed."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign(secret: str, message: str) -> str:
    """HMAC-SHA256 of `message`, hex."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time string comparison."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What an access token says."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expires_at: datetime


def issue_access_token(
    secret: str, *, user_id: uuid.UUID, session_id: uuid.UUID, ttl: timedelta
) -> tuple[str, datetime]:
    """A signed JWT for the user in this session; returns it and its expiry."""
    now = datetime.now(UTC)
    expires = now + ttl
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(user_id),
        "sid": str(session_id),
        "iat": now,
        "nbf": now,
        "exp": expires,
        "jti": uuid.uuid4().hex,
        "typ": "access",
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def decode_access_token(secret: str, token: str) -> AccessClaims:
    """Verify signature, issuer, audience and expiry; Unauthorized otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "sid"]},
            leeway=5,
        )
        if claims.get("typ") != "access":
            raise jwt.InvalidTokenError("not an access token")
        # Claims are whatever JSON the signer put there: a number for sid, an exp past the
        # calendar (PyJWT checks only that exp is an integer in the future).
        return AccessClaims(
            user_id=uuid.UUID(str(claims["sub"])),
            session_id=uuid.UUID(str(claims["sid"])),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the access token has expired", code="TOKEN_EXPIRED") from None
    except (jwt.InvalidTokenError, ValueError, OverflowError, OSError):
        raise Unauthorized("the access token is not valid", code="INVALID_TOKEN") from None


def derive_key(app_secret: str, purpose: bytes) -> bytes:
    """A 32-byte key for one purpose (e.g. b"fleetcore notification channel secrets v1"),
    derived from the app's secret key by HKDF-SHA256: secrets at rest get keys of their own,
    and changing the secret key makes them unreadable."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"fleetcore", info=purpose).derive(
        app_secret.encode()
    )
