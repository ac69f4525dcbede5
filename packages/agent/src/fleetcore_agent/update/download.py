"""Download of an assigned package over HTTP, chunk by chunk, resumable.

GET {base}/api/v1/devices/me/ota/{kind}?title=&version=&chunk=N&size=S with the device
token (the OTA contract): bytes [N*S, (N+1)*S), an empty body past the end. Each chunk is
appended to `<checksum>.part` and flushed to disk before the next is asked for, so a
restart (or a power cut) resumes from the chunk the file ends in instead of from zero.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleetcore_agent.http import no_redirect_opener

log = logging.getLogger("fleetcore_agent.update")

_HEX = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(RuntimeError):
    """A download cannot go on; `final` when trying again will not help."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True, slots=True)
class Package:
    """What the platform assigned (the sw_* shared attributes)."""

    title: str
    version: str
    size: int
    checksum: str
    checksum_algorithm: str = "SHA256"
    signature: str = ""
    signature_alg: str = ""


def part_path(directory: Path, package: Package) -> Path:
    """Where a package is downloaded to: named by its checksum, so another package's
    partial file is never continued."""
    name = package.checksum.lower()
    if not _HEX.match(name):
        name = hashlib.sha256(f"{package.title}\0{package.version}".encode()).hexdigest()
    return directory / f"{name}.part"


class Downloader:
    """Fetches one package into `directory` (resuming a partial file)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        directory: Path,
        *,
        chunk_size: int,
        kind: str = "software",
        timeout_s: float = 30.0,
    ) -> None:
        self.base = base_url.rstrip("/") + f"/api/v1/devices/me/ota/{kind}"
        self.token = token
        self.directory = directory
        self.chunk_size = chunk_size
        self.timeout_s = timeout_s
        self._opener = no_redirect_opener()

    def fetch(self, package: Package, *, stop: Callable[[], bool] = lambda: False) -> Path:
        """The complete file; raises DownloadError (the partial file stays unless final)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = part_path(self.directory, package)
        for stale in self.directory.glob("*.part"):
            if stale != path:
                stale.unlink(missing_ok=True)  # an earlier assignment's leftovers
        size = self.chunk_size
        with path.open("ab") as handle:
            have = handle.tell()
            if have > package.size:
                handle.truncate(0)
                have = 0
            # A crash mid-chunk leaves a tail: drop it and ask for that whole chunk again.
            chunk, tail = divmod(have, size)
            if tail:
                handle.truncate(chunk * size)
                handle.seek(chunk * size)
                have = chunk * size
            if have:
                log.info("resuming %s %s at byte %d", package.title, package.version, have)
            while have < package.size:
                if stop():
                    raise DownloadError("stopped", final=False)
                body = self._chunk(package, chunk)
                if not body:
                    raise DownloadError(
                        f"the package ended at {have} bytes, sw_size says {package.size}",
                        final=True,
                    )
                if len(body) > size or have + len(body) > package.size:
                    handle.truncate(0)
                    raise DownloadError(
                        f"chunk {chunk} has {len(body)} bytes: more than asked for or than "
                        f"sw_size {package.size}",
                        final=True,
                    )
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
                have += len(body)
                chunk += 1
        return path

    def _chunk(self, package: Package, chunk: int) -> bytes:
        query = urllib.parse.urlencode(
            {
                "title": package.title,
                "version": package.version,
                "chunk": chunk,
                "size": self.chunk_size,
            }
        )
        request = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s)
            f"{self.base}?{query}", headers={"X-Device-Token": self.token}
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise DownloadError(
                    f"the platform has no package {package.title} {package.version} "
                    "for this device (404)",
                    final=True,
                ) from None
            raise DownloadError(f"chunk {chunk}: HTTP {exc.code}", final=False) from None
        except (OSError, ValueError) as exc:
            raise DownloadError(f"chunk {chunk}: {exc}", final=False) from None
