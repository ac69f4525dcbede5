"""A real local HTTP receiver for webhooks: records every request, answers scripted statuses."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from tests.support.postgres import free_port

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    """One request as it arrived: headers (lower-case names), the raw body, our answer."""

    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # time.monotonic() on arrival

    @property
    def json(self) -> dict[str, Any]:
        """The body parsed."""
        data: dict[str, Any] = orjson.loads(self.body)
        return data

    @property
    def delivery_id(self) -> str:
        """The X-Fleetcore-Delivery header."""
        return self.headers["x-fleetcore-delivery"]

    def signed_with(self, secret: str) -> bool:
        """Whether X-Fleetcore-Signature is the HMAC-SHA256 of the raw body with `secret`."""
        expected = "sha256=" + hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("x-fleetcore-signature", ""), expected)


@dataclass
class WebhookReceiver:
    """Served by uvicorn on a fixed free port, so it can go down and come back."""

    port: int = field(default_factory=free_port)
    status: int = 200  # the answer once `script` is used up
    script: list[int] = field(default_factory=list)  # answers to give first, in order
    received: list[Received] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where to POST."""
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx."""
        return [r for r in self.received if 200 <= r.status < 300]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status = self.script.pop(0) if self.script else self.status
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body, status, time.monotonic()))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def start(self) -> None:
        """Listen (again) on the port."""
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, lifespan="off", log_config=None
        )
        self._server = server = uvicorn.Server(config)
        self._task = task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop listening: connections are refused until start()."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = self._task = None
