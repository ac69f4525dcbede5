"""Checks of a downloaded package: its SHA-256 checksum and its Ed25519 signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# DER prefix of an Ed25519 SubjectPublicKeyInfo (`openssl pkey -pubout`): the raw key follows.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class VerifyError(ValueError):
    """The package is not the one the platform assigned; the message says why."""


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_checksum(path: Path, expected: str, algorithm: str) -> None:
    """Raise unless the file's checksum is `expected` (SHA-256 only)."""
    if algorithm.replace("-", "").upper() != "SHA256":
        raise VerifyError(f"checksum algorithm {algorithm!r} is not supported (SHA256 only)")
    actual = sha256_of(path)
    if actual != expected.strip().lower():
        raise VerifyError(f"checksum mismatch: expected {expected}, got {actual}")


def public_key_bytes(text: str) -> bytes:
    """The raw 32-byte key from a PEM public key, base64 of its DER, or base64 of 32 bytes."""
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a PEM or base64 Ed25519 public key") from None
    if len(raw) == 32:
        return raw
    if len(raw) == 44 and raw.startswith(_SPKI_PREFIX):
        return raw[len(_SPKI_PREFIX) :]
    raise ValueError("not an Ed25519 public key (expected 32 raw bytes or an SPKI of 44)")


def check_signature(path: Path, signature_b64: str, algorithm: str, public_key: bytes) -> None:
    """Raise unless `signature_b64` is the Ed25519 signature of the file by `public_key`."""
    if not signature_b64:
        raise VerifyError("the package is not signed and this agent requires a signature")
    if algorithm.lower() != "ed25519":
        raise VerifyError(f"signature algorithm {algorithm!r} is not supported (ed25519 only)")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise VerifyError("the signature is not base64") from None
    if not _verify(public_key, path.read_bytes(), signature):
        raise VerifyError("signature mismatch: the package was not signed by the configured key")


def _verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """The `cryptography` package's Ed25519 (no signature code of our own)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
