"""HTTP clients for tests that talk to a real server over a socket.

httpx loads the CA bundle for every client it makes (about 18 ms of CPU here), and the
suite's readiness polls make a client every 100 ms; one context, loaded once, serves them
all (a context is safe to share).
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def local_client(**kwargs: Any) -> httpx.AsyncClient:
    """httpx.AsyncClient(**kwargs), without loading the CA bundle again."""
    kwargs.setdefault("verify", _tls())
    return httpx.AsyncClient(**kwargs)


def local_sync_client(**kwargs: Any) -> httpx.Client:
    """httpx.Client(**kwargs), without loading the CA bundle again."""
    kwargs.setdefault("verify", _tls())
    return httpx.Client(**kwargs)
