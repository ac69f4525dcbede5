"""Account link tokens: random, signed with the app's key, stored only as a hash.

A token is `<random>.<signature>`: 256 random bits, and an HMAC of them and the link's
purpose under the secret key. The signature lets a forged or mistyped link, or a reset token
presented as an invitation, be refused before any database lookup; the database holds only
the SHA-256 of the random part, so a copy of the table opens nothing.
"""

from __future__ import annotations

from fleetcore.accounts.models import Purpose
from fleetcore.auth.security import new_token, same, sign, token_hash

_SIGNATURE_CHARS = 32  # 128 bits of the HMAC: plenty against forgery


def _signature(secret: str, purpose: Purpose, raw: str) -> str:
    return sign(secret, f"account-link:{purpose.value}:{raw}")[:_SIGNATURE_CHARS]


def issue(secret: str, purpose: Purpose) -> tuple[str, str]:
    """A new token for `purpose`: (token for the link, hash to store)."""
    raw = new_token()
    return f"{raw}.{_signature(secret, purpose, raw)}", token_hash(raw)


def stored_hash(secret: str, purpose: Purpose, token: str) -> str | None:
    """The hash to look up if the token's signature holds for `purpose`, else None."""
    raw, dot, signature = token.partition(".")
    if not dot or not raw or not same(signature, _signature(secret, purpose, raw)):
        return None
    return token_hash(raw)
