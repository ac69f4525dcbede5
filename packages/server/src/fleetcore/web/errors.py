"""The web layer's answer to every error: the JSON envelope, or for a browser navigating
to a page, an HTML error page. The domain errors themselves live in fleetcore.errors, free of
the web framework; this module is the one place that maps them (and the framework's own HTTP,
validation and database errors) to responses."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from fleetcore.db import storage_full
from fleetcore.errors import DomainError
from fleetcore.request_context import current_request_id
from fleetcore.templating import templates

log = structlog.get_logger(__name__)


class ErrorBody(BaseModel):
    """What went wrong: a stable code, a message for people, details, the request id."""

    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None


class ErrorEnvelope(BaseModel):
    """The body of every error answer."""

    error: ErrorBody


# What any API route may answer besides its success, each with the envelope: bad JSON (400),
# no or bad credentials (401), a role or CSRF refusal (403), a missing object or another
# organization's (404), a clash (409), a body too large (413), invalid input (422), the
# database busy or the platform overloaded (503).
API_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 503)


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` saying these statuses answer the error envelope."""
    return {status: {"model": ErrorEnvelope} for status in statuses}


def envelope(
    code: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """The one error body every endpoint answers with."""
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": current_request_id(),
        }
    }


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSONResponse holding the envelope."""
    return JSONResponse(envelope(code, message, details), status_code=status, headers=headers)


# Machine paths keep the JSON envelope whatever the Accept header says.
_MACHINE_PREFIXES = ("/api/", "/static/")
_MACHINE_PATHS = frozenset({"/api", "/health", "/ready", "/metrics"})
_TITLES = {403: "Not allowed", 404: "Not found", 405: "Not allowed", 422: "Not accepted"}


def wants_html(request: Request) -> bool:
    """A browser navigating to a page (not the API, not an htmx swap, not a script's fetch)
    gets an HTML error page; everything else keeps the envelope."""
    path = request.url.path
    if path in _MACHINE_PATHS or path.startswith(_MACHINE_PREFIXES):
        return False
    if request.headers.get("HX-Request") == "true":
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept


def error_page(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """The error as an HTML page in the site's layout."""

    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": status,
            "title": _TITLES.get(status, "Something went wrong"),
            "message": message,
            "request_id": current_request_id(),
        },
        status_code=status,
        headers=headers,
    )


def error_answer(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The envelope, or for a browser navigating to a page, an HTML error page."""
    if wants_html(request):
        return error_page(request, status, message, headers)
    return error_response(status, code, message, details, headers)


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def _allowed_methods(request: Request) -> str:
    """Every method served at the request's path: Starlette's 405 names only those of the
    first route that matched the path, and each method of a resource is a route of its own."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if route.methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def _limited(request: Request, headers: dict[str, str] | None) -> dict[str, str] | None:
    """`headers` plus the RateLimit headers of an API-rate-limited caller (auth.deps); read
    on the error path only, so successful answers pay nothing here. A 429 brings its own."""
    limited: dict[str, str] | None = getattr(request.state, "rate_limit_headers", None)
    return {**limited, **(headers or {})} if limited else headers


async def _domain_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DomainError)
    headers = _limited(request, exc.headers)
    return error_answer(request, exc.status_code, exc.code, exc.message, exc.details, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    if wants_html(request) and exc.status_code == 404:
        message = f"There is no page at {request.url.path}."
    headers = _limited(request, headers)
    return error_answer(request, exc.status_code, code, message, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": ".".join(str(part) for part in err.get("loc", ())),
            "message": err.get("msg", "invalid"),
            "type": err.get("type", "invalid"),
        }
        for err in exc.errors()
    ]
    if any(err["type"] == "json_invalid" for err in errors):
        return error_response(
            400, "MALFORMED_JSON", "the request body is not valid JSON", {"errors": errors}
        )
    fields = ", ".join(err["field"] for err in errors)
    if wants_html(request):
        if any(err["field"].startswith("path.") for err in errors):
            # /devices/not-an-id: to a person that is a page that does not exist.
            return error_page(request, 404, f"There is no page at {request.url.path}.")
        details = "; ".join(f"{err['field']}: {err['message']}" for err in errors)
        return error_page(request, 422, f"Invalid request ({details}).")
    return error_response(
        422,
        "VALIDATION_ERROR",
        f"invalid request: {fields}",
        {"errors": errors},
        headers=_limited(request, None),
    )


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    # Locked (SQLite busy past its timeout), unreachable, or no pooled connection free in
    # time (a slow database): the client may retry; log the cause.
    if storage_full(exc):
        log.error("database_storage_full", error=str(exc)[:300])
        return error_response(
            507,
            "STORAGE_FULL",
            "the database's disk is full; nothing was stored",
            headers={"Retry-After": "60"},
        )
    log.warning("database_unavailable", error=str(exc)[:300])
    return error_response(
        503,
        "DATABASE_UNAVAILABLE",
        "the database is busy or unreachable; retry shortly",
        headers={"Retry-After": "1"},
    )


# PostgreSQL can neither store nor compare a NUL character (in text: 22021; \u0000 in jsonb:
# 22P05); SQLite can. A request that carries one to a query is the client's error.
_UNSTORABLE_TEXT = frozenset({"22021", "22P05"})


async def _database_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) in _UNSTORABLE_TEXT:
        return error_answer(
            request,
            422,
            "INVALID_CHARACTER",
            "the request contains a character that cannot be stored or searched (NUL)",
        )
    raise exc  # anything else is ours: the middleware logs it and answers 500


def install_error_handlers(app: FastAPI) -> None:
    """Map every error the app can raise to the envelope (unhandled ones: see middleware)."""
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_unavailable)  # every connection busy
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
