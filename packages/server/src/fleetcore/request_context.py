"""The request id of the request being served, available anywhere in its task."""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("fleetcore_request_id", default=None)
# Accept a caller's id only if it is short and harmless in logs and headers.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def current_request_id() -> str | None:
    """The id of the request this task serves, if any."""
    return _request_id.get()


def set_request_id(value: str | None) -> object:
    """Bind an id to this task; returns a token for reset_request_id."""
    return _request_id.set(value)


def reset_request_id(token: object) -> None:
    """Restore the id bound before set_request_id."""
    _request_id.reset(token)  # type: ignore[arg-type]


# Fresh ids: 16 random hex digits per process, then a 16-digit counter (32 characters, like
# a UUID's hex). Unique across processes and restarts without a random draw per request;
# an id names a request in logs and answers, it grants nothing, so it may be guessable.
_PROCESS_PREFIX = os.urandom(8).hex()
_counter = itertools.count(1)


def accept_or_generate(incoming: str | None) -> str:
    """Use the caller's X-Request-ID when it is safe, else a fresh one."""
    if incoming and _SAFE_ID.match(incoming):
        return incoming
    return f"{_PROCESS_PREFIX}{next(_counter):016x}"


_client_address: ContextVar[str | None] = ContextVar("fleetcore_client_address", default=None)


def current_client_address() -> str | None:
    """The address of the client this task serves, if any."""
    return _client_address.get()


def set_client_address(value: str | None) -> object:
    """Bind the client address to this task; returns a token for reset_client_address."""
    return _client_address.set(value)


def reset_client_address(token: object) -> None:
    """Restore the address bound before set_client_address."""
    _client_address.reset(token)  # type: ignore[arg-type]
