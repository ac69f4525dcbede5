"""Ed25519 package signatures: public keys as PEM or raw base64, signatures over the bytes.

Sign with OpenSSL (docs/ota.md): ``openssl pkeyutl -sign -rawin -inkey key.pem -in pkg.bin
| base64 -w0``; register the public key (``openssl pkey -in key.pem -pubout``).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcore.errors import Invalid

SIGNATURE_ALG = "ed25519"
_RAW = serialization.Encoding.Raw
_RAW_FORMAT = serialization.PublicFormat.Raw


def _bad_key() -> Invalid:
    return Invalid(
        "public_key must be an Ed25519 public key: PEM (openssl pkey -pubout) or the raw "
        "32 bytes in base64",
        code="OTA_KEY_INVALID",
        details={"field": "public_key"},
    )


def parse_public_key(text: str) -> str:
    """The raw key as base64, from PEM or raw base64; OTA_KEY_INVALID otherwise."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise _bad_key() from None
        if not isinstance(key, Ed25519PublicKey):
            raise _bad_key()
        raw = key.public_bytes(_RAW, _RAW_FORMAT)
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_key() from None
        if len(raw) != 32:
            raise _bad_key()
        try:
            Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise _bad_key() from None
    return base64.b64encode(raw).decode()


def decode_signature(text: str) -> bytes:
    """The 64 signature bytes from base64 (whitespace allowed, as `base64` wraps lines)."""
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 64:
        raise Invalid(
            "signature must be a base64 Ed25519 signature (64 bytes)",
            code="OTA_SIGNATURE_INVALID",
            details={"field": "signature"},
        )
    return raw


def verifies(public_key_b64: str, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is the key's over `data`."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
