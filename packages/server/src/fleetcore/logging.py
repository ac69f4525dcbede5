"""Structured logging through structlog, stdlib loggers included: JSON lines for machines,
aligned coloured lines for a person at a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from fleetcore.request_context import current_request_id


def _add_request_id(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    request_id = current_request_id()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


# Libraries that narrate their routine work at info: alembic lists its plugins and every
# revision it applies (we log one "migrations_applied" line), httpx every request it makes
# (the demo's simulated devices, webhooks), websockets every MQTT-over-WebSocket connection
# (fleetcore.mqtt's own lines say what matters). At debug they say everything.
_CHATTY = ("alembic", "httpx", "httpcore", "websockets")


def resolve_format(fmt: str, stream: TextIO) -> str:
    """ "auto" is console on a terminal and JSON anywhere else (a pipe, a file, the journal)."""
    if fmt != "auto":
        return fmt
    return "console" if _is_terminal(stream) else "json"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library (uvicorn, alembic) to one stream (stderr).

    `fmt` is "json", "console" or "auto" (console when the stream is a terminal)."""
    stream = sys.stderr if stream is None else stream
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_request_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[Any] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if resolve_format(fmt, stream) == "json"
        # The console renderer lays out exceptions itself (format_exc_info would flatten them),
        # as plain tracebacks: rich's default prints every frame's locals, which can hold
        # tokens and passwords, and costs megabytes and seconds per error.
        else [
            structlog.dev.ConsoleRenderer(
                colors=_is_terminal(stream), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    )
    structlog.configure(
        # Drop disabled levels before any processor runs (the access line is on every request).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; send everything through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # Our middleware writes one access line per request with its id and route.
    logging.getLogger("uvicorn.access").disabled = True
    # A propagated record meets no level but its own logger's: raise these to warning at least.
    quiet = logging.NOTSET if root.level <= logging.DEBUG else max(root.level, logging.WARNING)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(quiet)
