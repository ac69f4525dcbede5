"""Throwaway TLS certificates for tests (openssl, from Debian)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(directory: Path, *, host: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) in PEM, valid a day for `host` (as CN and subject alternative
    name, so hostname checks pass with the certificate as its own CA)."""
    certificate, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={host}",
            "-addext",
            f"subjectAltName=DNS:{host}",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key
