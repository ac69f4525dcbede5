"""One pure-ASGI middleware: request id, access log, metrics, and the 500 envelope."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import structlog
from fastapi.routing import iter_route_contexts
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcore.metrics import HTTP_LATENCY, HTTP_REQUESTS
from fleetcore.request_context import (
    accept_or_generate,
    reset_client_address,
    reset_request_id,
    set_client_address,
    set_request_id,
)
from fleetcore.web.errors import envelope

log = structlog.get_logger("fleetcore.http")
_stdlib_log = logging.getLogger("fleetcore.http")  # where structlog's lines go: its level
CLIENT_CLOSED_REQUEST = 499  # the status proxies log for a client that left mid-request


def loggable_path(scope: Scope) -> str:
    """The request path with any device token in it replaced by ***.

    ThingsBoard firmware puts its token in the path (/api/v1/{token}/telemetry); a token in
    a log is a credential anyone with the logs can use. A matched route names the segment;
    for a path no route matched, the segment after /api/v1/ is masked unless it is one of
    the API's own collections (a device posting to a wrong sub-path still sends its token).
    """
    path: str = scope.get("path", "")
    token = (scope.get("path_params") or {}).get("token")
    if isinstance(token, str) and token:
        return path.replace(token, "***")
    if scope.get("route") is None and path.startswith(_API_PREFIX):
        segment, _, rest = path[len(_API_PREFIX) :].partition("/")
        if segment and segment not in api_collections(scope.get("app")):
            return f"{_API_PREFIX}***" + (f"/{rest}" if rest or path.endswith("/") else "")
    return path


_API_PREFIX = "/api/v1/"
_collections: dict[int, frozenset[str]] = {}


def api_collections(app: object) -> frozenset[str]:
    """The first segments of the app's /api/v1 routes that are not parameters (cached)."""
    key = id(app)
    if key not in _collections:
        names = set()
        # Through FastAPI's route contexts: an included router's routes are not app.routes.
        for route in iter_route_contexts(getattr(app, "routes", ())):
            path = route.path
            if isinstance(path, str) and path.startswith(_API_PREFIX):
                first = path[len(_API_PREFIX) :].split("/", 1)[0]
                if first and not first.startswith("{"):
                    names.add(first)
        _collections[key] = frozenset(names)
    return _collections[key]


def _route_template(scope: Scope) -> str:
    # path_format leaves out converters: {device_id}, not {device_id:uuid}, in labels and logs.
    route = scope.get("route")
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else "<unmatched>"


_SERIES_MAX = 10_000  # methods come from clients: a bound, far above what routes make
_series_of: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _series(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of a (method, route, status), found once:
    a labels() look-up takes a lock and builds a key on every call."""
    key = (method, route, status)
    found = _series_of.get(key)
    if found is None:
        found = (
            HTTP_REQUESTS.labels(method, route, str(status)),
            HTTP_LATENCY.labels(method, route),
        )
        if len(_series_of) < _SERIES_MAX:
            _series_of[key] = found
    return found


def request_id_of(scope: Scope) -> str:
    """The caller's X-Request-ID when it is safe, else a fresh one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return accept_or_generate(value.decode("latin-1"))
    return accept_or_generate(None)


def _access_line_wanted() -> bool:
    """False when structlog would drop an info line at its first step (the configured level
    is above info): then the line is not even built. Any other set-up (a test capturing the
    logs) gets every line."""
    if _stdlib_log.isEnabledFor(logging.INFO):
        return True
    processors = structlog.get_config()["processors"]
    return not processors or processors[0] is not structlog.stdlib.filter_by_level


def record_request(scope: Scope, route: str, status: int, elapsed: float, client: str) -> None:
    """Count and time a finished request; its access line when the log level takes it (the
    line's fields are not even gathered otherwise: it is written on every request)."""
    method = scope.get("method", "")
    requests, latency = _series(method, route, status)
    requests.inc()
    latency.observe(elapsed)
    if _access_line_wanted():
        log.info(
            "request",
            method=method,
            path=loggable_path(scope),
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            client=client,
        )


class RequestContextMiddleware:
    """Binds a request id to the task, echoes it, logs and measures every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = set_request_id(request_id)
        client = (scope.get("client") or ("-",))[0]
        client_token = set_client_address(client)
        # No structlog binding: logging's _add_request_id processor adds the id to every
        # line from the request context (one contextvar, not two per request).
        status = 500
        started = False
        begin = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            # The client went away before its body was read: nobody to answer, nothing of
            # ours failed. Counted as 499 (the client closed the request), not logged as an error.
            status = CLIENT_CLOSED_REQUEST
            log.info("client_disconnected", method=scope.get("method"), path=loggable_path(scope))
        except Exception:
            log.exception("unhandled_error", method=scope.get("method"), path=loggable_path(scope))
            if scope["type"] == "http" and not started:
                await send_internal_error(send_with_id)
        finally:
            if scope["type"] == "http":
                elapsed = time.perf_counter() - begin
                record_request(scope, _route_template(scope), status, elapsed, client)
            reset_request_id(token)
            reset_client_address(client_token)


async def send_internal_error(send: Send) -> None:
    """The 500 envelope, for an error nothing else answered."""
    body = orjson.dumps(
        envelope("INTERNAL_ERROR", "an internal error occurred; the request id identifies it")
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
