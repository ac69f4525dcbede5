"""HTTP fallback to the platform's device API (stdlib only), behind a circuit breaker.

Redirects are not followed. urllib would send the device token along to wherever a
redirect points (another host included), and would turn a POST into a GET whose 2xx the
agent would take for its batch stored. A 3xx is an answer like any other failure: the batch
stays queued, and the log names the address to configure instead.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import IO, Any

from fleetcore_agent.resilience import CircuitBreaker

log = logging.getLogger("fleetcore_agent.http")

# Answers that mean the platform will never take this body as it is: do not resend.
REFUSED_FOR_GOOD = frozenset({400, 413, 422})


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one request."""

    ok: bool
    status: int | None  # None: no answer (network, breaker open)
    body: Any = None

    @property
    def refused(self) -> bool:
        """The platform will never take this body."""
        return self.status in REFUSED_FOR_GOOD


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is raised as an HTTPError with its 3xx status, never followed."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> None:
        return None


def no_redirect_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that answers a redirect with its 3xx, never following it."""
    return urllib.request.build_opener(_NoRedirects)


class DeviceApi:
    """The device half of the platform's REST API, authenticated by X-Device-Token."""

    def __init__(
        self, base_url: str, token: str, breaker: CircuitBreaker, *, timeout_s: float = 10.0
    ) -> None:
        self.base = base_url.rstrip("/") + "/api/v1/devices/me"
        self.token = token
        self.breaker = breaker
        self.timeout_s = timeout_s
        self._opener = no_redirect_opener()
        self._redirects_seen: set[str] = set()

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        timeout_s: float | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        if not self.breaker.allow():
            return Answer(False, None)
        request = urllib.request.Request(  # noqa: S310 - the URL is validated as http(s)
            self.base + path,
            data=body,
            method=method,
            headers={"X-Device-Token": self.token, "Content-Type": content_type},
        )
        try:
            with self._opener.open(request, timeout=timeout_s or self.timeout_s) as response:
                raw = response.read()
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            raw = exc.read()
            if 300 <= status < 400:
                self._note_redirect(status, str(exc.headers.get("Location", "")))
        except (OSError, ValueError):
            self.breaker.failure()
            return Answer(False, None)
        if status >= 500 or status in (401, 403, 429):
            self.breaker.failure()
        else:
            self.breaker.success()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return Answer(200 <= status < 300, status, parsed)

    def _note_redirect(self, status: int, location: str) -> None:
        # Once per address, not once per retry (and a few addresses at most).
        if location not in self._redirects_seen and len(self._redirects_seen) < 10:
            self._redirects_seen.add(location)
            log.warning(
                "the platform answered %d redirecting to %r; redirects are not followed "
                "(the device token stays here): set http_url to the address to use",
                status,
                location[:200],
            )

    def send_telemetry(self, payload: bytes) -> Answer:
        """POST a telemetry batch; 2xx comes after the platform committed it."""
        return self._call("POST", "/telemetry", payload)

    def report_attributes(self, values: dict[str, Any]) -> Answer:
        """Merge into the device's client attributes."""
        return self._call("POST", "/attributes", json.dumps(values).encode())

    def poll_commands(self, wait_s: float) -> list[dict[str, Any]]:
        """Queued commands (long-poll); empty on timeout or failure."""
        answer = self._call(
            "GET", f"/commands?timeout={wait_s:g}", timeout_s=wait_s + self.timeout_s
        )
        if not answer.ok or not isinstance(answer.body, dict):
            return []
        commands = answer.body.get("commands", [])
        return [c for c in commands if isinstance(c, dict)]

    def send_result(self, command_id: str, result: dict[str, Any]) -> Answer:
        """Answer a command."""
        return self._call("POST", f"/commands/{command_id}/result", json.dumps(result).encode())

    def send_event(self, event: dict[str, Any], image: bytes | None = None) -> Answer:
        """POST one event as multipart/form-data: an `event` JSON part, and an `image` part
        (image/jpeg) when given; 201 comes after the platform stored both."""
        body, content_type = multipart(event, image)
        return self._call("POST", "/events", body, content_type=content_type)


def multipart(event: dict[str, Any], image: bytes | None) -> tuple[bytes, str]:
    """The multipart body of one event (and its image) and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f"--{boundary}\r\n".encode()
    parts = [
        head,
        b'Content-Disposition: form-data; name="event"\r\n',
        b"Content-Type: application/json\r\n\r\n",
        json.dumps(event, separators=(",", ":"), allow_nan=False).encode(),
        b"\r\n",
    ]
    if image is not None:
        parts += [
            head,
            b'Content-Disposition: form-data; name="image"; filename="image.jpg"\r\n',
            b"Content-Type: image/jpeg\r\n\r\n",
            image,
            b"\r\n",
        ]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
