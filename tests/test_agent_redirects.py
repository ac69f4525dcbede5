"""The edge agent's HTTP client never takes the device token elsewhere: a redirect is not
followed, so the token reaches only the configured platform, and the batch stays queued
(issue 14, finding 10). Two real local HTTP servers: one redirects, the other records."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleetcore_agent.http import DeviceApi
from fleetcore_agent.resilience import CircuitBreaker

TOKEN = "fcd_device-token-that-must-stay-home"


class Recorder(ThreadingHTTPServer):
    """Answers 200 {} to anything and keeps the headers of every request."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        super().__init__(("127.0.0.1", 0), _Recording)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Redirector(ThreadingHTTPServer):
    """Answers every request with `status` and Location: the same path on `target`."""

    def __init__(self, target: str, status: int) -> None:
        self.target = target
        self.status = status
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Redirecting)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return

    def _body(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))


class _Recording(_Quiet):
    server: Recorder

    def _answer(self) -> None:
        self._body()
        self.server.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer


class _Redirecting(_Quiet):
    server: Redirector

    def _answer(self) -> None:
        self._body()
        self.server.requests += 1
        self.send_response(self.server.status)
        self.send_header("Location", self.server.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer


def serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder()
    thread = serve(server)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_elsewhere_never_gets_the_device_token(recorder: Recorder, status: int) -> None:
    redirector = Redirector(recorder.base, status)
    thread = serve(redirector)
    try:
        api = DeviceApi(redirector.base, TOKEN, CircuitBreaker(failures=3, reset_s=60))
        sent = api.send_telemetry(b'{"t": 1}')
        polled = api.poll_commands(0)
        reported = api.report_attributes({"a": 1})
    finally:
        redirector.shutdown()
        redirector.server_close()
        thread.join()
    assert redirector.requests == 3  # every call reached the configured platform ...
    assert recorder.seen == []  # ... and nothing went on to the other host
    # A redirect is not success: the batch stays queued to be sent again.
    assert (sent.ok, sent.refused, sent.status) == (False, False, status)
    assert polled == []
    assert not reported.ok


def test_the_configured_platform_gets_the_token(recorder: Recorder) -> None:
    """The check above is not a client that sends nothing: without a redirect the same
    calls arrive, with the token."""
    api = DeviceApi(recorder.base, TOKEN, CircuitBreaker(failures=3, reset_s=60))
    assert api.send_telemetry(b'{"t": 1}').ok
    assert [h["x-device-token"] for h in recorder.seen] == [TOKEN]
