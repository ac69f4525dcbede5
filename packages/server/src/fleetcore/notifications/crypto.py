"""Channel secrets encrypted at rest, with a key derived from the app's secret key."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken

from fleetcore.auth.security import derive_key


class SecretBox:
    """Encrypts and decrypts channel secrets (Fernet: AES-128-CBC + HMAC-SHA256)."""

    def __init__(self, app_secret: str) -> None:
        key = derive_key(app_secret, b"fleetcore notification channel secrets v1")
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, secret: str) -> str:
        """The secret as a token to store."""
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The stored token back as the secret; ValueError if the key changed."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError("the channel secret does not decrypt with this secret key") from None


def signature(secret: str, body: bytes) -> str:
    """The X-Fleetcore-Signature value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
