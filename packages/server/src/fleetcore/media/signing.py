"""Signed, short-lived URLs: a device's upload URL and a link to a media for notifications.

A token is ``<purpose>.<media id>.<expiry, unix seconds>.<HMAC-SHA256>`` with a key derived
from the app's secret key for this use only; it grants one thing (upload that media, or read
it or its thumbnail) until it expires. Upload URLs are also single use: the media row leaves
the pending state with the first good upload (media/uploads.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from fleetcore.config import Settings
from fleetcore.errors import Forbidden

Purpose = Literal["upload", "image", "thumbnail"]
_CODES: dict[Purpose, str] = {"upload": "u", "image": "i", "thumbnail": "t"}
_PURPOSES = {code: purpose for purpose, code in _CODES.items()}
UPLOAD_PATH = "/api/v1/media/uploads/"
SIGNED_PATH = "/api/v1/media/signed/"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows."""

    purpose: Purpose
    media_id: uuid.UUID
    expires_at: int


def _key(settings: Settings) -> bytes:
    secret = settings.secret_key.get_secret_value().encode()
    return hmac.new(secret, b"fleetcore media url v1", hashlib.sha256).digest()


def _mac(key: bytes, body: str) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(settings: Settings, purpose: Purpose, media_id: uuid.UUID, expires_at: int) -> str:
    """A token granting `purpose` on the media until `expires_at` (unix seconds)."""
    body = f"{_CODES[purpose]}.{media_id.hex}.{expires_at}"
    return f"{body}.{_mac(_key(settings), body)}"


def verify(settings: Settings, token: str, purpose: Purpose, *, now: float | None = None) -> Grant:
    """The grant of a valid, unexpired token for `purpose`; Forbidden otherwise."""
    invalid = Forbidden("the link is not valid", code="MEDIA_URL_INVALID")
    parts = token.split(".")
    if len(token) > 200 or len(parts) != 4:
        raise invalid
    code, media_hex, expiry, mac = parts
    body = f"{code}.{media_hex}.{expiry}"
    if not hmac.compare_digest(mac, _mac(_key(settings), body)):
        raise invalid
    if _PURPOSES.get(code) != purpose or not expiry.isdigit():
        raise invalid
    try:
        media_id = uuid.UUID(hex=media_hex)
    except ValueError:
        raise invalid from None
    if int(expiry) <= (time.time() if now is None else now):
        raise Forbidden("the link has expired; ask for a new one", code="MEDIA_URL_EXPIRED")
    return Grant(purpose, media_id, int(expiry))


def signed_link(
    settings: Settings, media_id: uuid.UUID, *, thumbnail: bool = False, ttl_s: int | None = None
) -> tuple[str, int]:
    """A path (/api/v1/media/signed/...) reading the media without other auth, and its
    expiry; for links in notifications and webhooks (prefix the site's public URL)."""
    expires_at = int(time.time()) + (ttl_s or settings.media_link_ttl_s)
    token = sign(settings, "thumbnail" if thumbnail else "image", media_id, expires_at)
    return SIGNED_PATH + token, expires_at
