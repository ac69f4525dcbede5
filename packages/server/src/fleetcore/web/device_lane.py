"""The device lane: the telemetry ingest routes served ahead of the general middleware stack.

A device posting one reading is the request the API serves most. Through the general stack
it passes FastAPI's error, telemetry and body-limit layers, our request context, security
headers and body limit middlewares, Starlette's exception layer and the router's walk over
its routes, each wrapping `send` once more: together about as much CPU as the ingest itself.
The lane does for these routes what those layers do for them, once, in one function: the
request id (the caller's or a fresh one, echoed in X-Request-ID and in every log line), the
security headers, the error envelope (the app's own exception handlers, so every error
answers exactly as elsewhere; anything unhandled a 500 envelope), the metrics and the access
line (as RequestContextMiddleware writes them). The endpoint itself is the route's, called as
its _LeanRoute would call it: room, token cache, body under its limit, plan quota, usage,
the answer after the commit.

Anything out of the ordinary takes the general stack, so nothing changes for it: a method or
path of another route (a ThingsBoard token equal to one of the API's collections, too), an
Origin header (CORS answers those), a body without Content-Length or past the app's body
limit (BodyLimitMiddleware's 413), a root path.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

import structlog
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetcore.middleware import (
    CLIENT_CLOSED_REQUEST,
    loggable_path,
    record_request,
    request_id_of,
    send_internal_error,
)
from fleetcore.request_context import (
    reset_client_address,
    reset_request_id,
    set_client_address,
    set_request_id,
)
from fleetcore.security_headers import with_security_headers

log = structlog.get_logger("fleetcore.http")

Endpoint = Callable[..., Coroutine[Any, Any, Response]]
Handler = Callable[[Request, Exception], Any]
_PREFIX = "/api/v1/"


class DeviceLane:
    """Serves POSTs to the given lean routes itself; passes everything else to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[APIRoute],
        collections: frozenset[str],
        handlers: Mapping[Any, Handler],
        headers: list[tuple[bytes, bytes]],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.fixed: dict[str, APIRoute] = {}  # a path without parameters -> its route
        self.by_token: dict[str, APIRoute] = {}  # /api/v1/{token}/<rest>: <rest> -> route
        for route in routes:
            if "{" not in route.path:
                self.fixed[route.path] = route
            elif route.path.startswith(_PREFIX + "{token}/"):
                self.by_token[route.path[len(_PREFIX + "{token}/") :]] = route
            else:
                raise ValueError(f"the lane serves no route like {route.path}")
        self.collections = collections
        self.handlers = {k: v for k, v in handlers.items() if isinstance(k, type)}
        self.headers = headers
        self.max_body_bytes = max_body_bytes

    def _route(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        """The lane's route for this request and its path parameters, or None."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        route = self.fixed.get(path)
        if route is not None:
            return route, {}
        if not self.by_token or not path.startswith(_PREFIX):
            return None
        token, _, rest = path[len(_PREFIX) :].partition("/")
        route = self.by_token.get(rest)
        # A segment naming one of the API's own collections is another route's path.
        if route is None or not token or token in self.collections:
            return None
        return route, {"token": token}

    def _plain(self, scope: Scope) -> bool:
        """A body with a Content-Length within the limit, and no Origin (no CORS)."""
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"origin":
                return False
        return 0 <= length <= self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._route(scope)
        if found is None or not self._plain(scope):
            await self.app(scope, receive, send)
            return
        route, params = found
        scope["route"], scope["endpoint"], scope["path_params"] = route, route.endpoint, params
        await self._serve(route, params, scope, receive, send)

    async def _serve(
        self,
        route: APIRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        begin = time.perf_counter()
        request_id = request_id_of(scope)
        id_token = set_request_id(request_id)
        client = (scope.get("client") or ("-",))[0]
        client_token = set_client_address(client)
        echoed = [(b"x-request-id", request_id.encode("latin-1"))]
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                own = list(message.get("headers", ())) + echoed
                message = {**message, "headers": with_security_headers(own, self.headers)}
            await send(message)

        request = Request(scope, receive)
        try:
            try:
                response = await route.endpoint(request, **params)
            except Exception as exc:
                response = await self._handled(request, exc)
            await self._answer(response, scope, receive, send_with_headers)
        except ClientDisconnect:
            status = CLIENT_CLOSED_REQUEST  # as RequestContextMiddleware counts it
            log.info("client_disconnected", method="POST", path=loggable_path(scope))
        except Exception:
            log.exception("unhandled_error", method="POST", path=loggable_path(scope))
            if not started:
                await send_internal_error(send_with_headers)
        finally:
            record_request(scope, route.path_format, status, time.perf_counter() - begin, client)
            reset_request_id(id_token)
            reset_client_address(client_token)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's answer to `exc` (its most specific handler), or `exc` raised again."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                if inspect.iscoroutinefunction(handler):
                    answer: Response = await handler(request, exc)
                else:
                    answer = await run_in_threadpool(handler, request, exc)
                return answer
        raise exc

    @staticmethod
    async def _answer(response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        body = getattr(response, "body", None)
        if type(body) is not bytes or response.background is not None:
            await response(scope, receive, send)  # streamed, or with work after it
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": body})
