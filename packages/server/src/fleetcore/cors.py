"""CORS for a front-end served from another origin: off unless FLEETCORE_CORS_ORIGINS lists it.

Only the listed origins are ever answered (an unlisted origin gets no Access-Control-Allow-*
header, and its preflight a 400), never `*`: a wildcard would let any site read what a
signed-in browser may. Credentials (the session cookie) cross origins only with
FLEETCORE_CORS_ALLOW_CREDENTIALS, and then only for the listed origins; bearer tokens and
API keys need no credentials mode.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Message, Send

from fleetcore.auth.deps import CSRF_HEADER
from fleetcore.config import Settings

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REQUEST_HEADERS = ("Authorization", "Content-Type", "X-API-Key", CSRF_HEADER, "X-Request-ID")
# What a front-end may read of an answer besides the CORS-safelisted headers.
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "Location", "ETag")
PREFLIGHT_MAX_AGE_S = 600


def _strip(headers: MutableHeaders) -> None:
    for name in [name for name in headers if name.lower().startswith("access-control-")]:
        del headers[name]


class ListedOriginsCORS(CORSMiddleware):
    """Starlette's CORS, sending no Access-Control-* header at all to an unlisted origin
    (Starlette sends Allow-Credentials and Expose-Headers to any origin; without
    Allow-Origin they grant nothing, but an answer to a stranger should say nothing)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        """The preflight answer; to an unlisted origin, a bare 400."""
        response = super().preflight_response(request_headers)
        if not self.is_allowed_origin(origin=request_headers["origin"]):
            _strip(response.headers)
        return response

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        """The answer's headers: CORS ones for listed origins only."""
        origin = request_headers.get("origin")
        if origin is None or self.is_allowed_origin(origin=origin):
            await super().send(message, send, request_headers)
            return

        async def stripped(message: Message) -> None:
            if message["type"] == "http.response.start":
                _strip(MutableHeaders(scope=message))
            await send(message)

        await super().send(message, stripped, request_headers)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Add the CORS middleware when origins are configured (outermost: preflights are
    answered before any other layer, and every answer, errors too, carries the headers)."""
    if not settings.cors_origins:
        return
    app.add_middleware(
        ListedOriginsCORS,
        allow_origins=list(settings.cors_origins),
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=list(METHODS),
        allow_headers=list(REQUEST_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        max_age=PREFLIGHT_MAX_AGE_S,
    )
