"""Where the broker listens: TCP, TLS and WebSocket, on asyncio.

Each accepted connection is admitted first (fleetcore.mqtt.limits.ConnectionGate): one
over a limit is closed before anything is read. Then the broker's lifecycle task for it
(`FleetBroker._serve`) starts, and what the peer sends goes to its `Connection` as bytes.

- TCP: an asyncio Protocol, so a burst of packets is framed from the bytes as they arrive,
  without a stream or a task in between (see fleetcore.mqtt.connection).
- TLS: the same listener, with TLS started by the lifecycle task after admission, so a
  connection is counted, and its CONNECT deadline runs, from the TCP accept rather than
  from the end of a handshake the client may never finish.
- WebSocket (subprotocol "mqtt", binary frames; the `websockets` package, which uvicorn
  brings): admitted once the HTTP upgrade is done; packets may span frames.

A listener is configured as ``{"type": "tcp" | "ws", "bind": "host:port"}``, plus
``"ssl": true, "certfile", "keyfile"`` for TLS (fleetcore.mqtt.transport.broker_config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fleetcore.mqtt.connection import Connection
from fleetcore.mqtt.limits import ConnectionGate

log = logging.getLogger(__name__)

# Runs a connection's life: (connection, how to start its TLS, or None for none).
Serve = Callable[[Connection, Callable[[], Awaitable[None]] | None], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listener of the configuration."""

    name: str
    kind: str  # "tcp" or "ws"
    host: str | None
    port: int
    tls: ssl.SSLContext | None

    @classmethod
    def parse(cls, name: str, config: dict[str, Any]) -> ListenerConfig:
        """From ``{"type", "bind", "ssl", "certfile", "keyfile"}``."""
        host, _, port = str(config["bind"]).rpartition(":")
        tls = None
        if config.get("ssl"):
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config["certfile"], config["keyfile"])
        kind = str(config.get("type", "tcp"))
        if kind not in ("tcp", "ws"):
            raise ValueError(f"listener {name}: type {kind!r} is not tcp or ws")
        return cls(name, kind, host.strip("[]") or None, int(port), tls)  # None: every address


def remote_of(peer: Any) -> str:
    """ "host:port" of a socket's peer name."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return "unknown"


class TcpLink(asyncio.Protocol):
    """One TCP (or TLS) connection: bytes in to its Connection, bytes out to the socket."""

    def __init__(
        self, gate: ConnectionGate, serve: Serve, listener: str, tls: ssl.SSLContext | None
    ) -> None:
        self.gate = gate
        self.listener = listener
        self.serve = serve
        self.tls = tls
        self.transport: asyncio.Transport | None = None
        self.connection: Connection | None = None
        self.task: asyncio.Task[None] | None = None
        # Bytes that arrive between the TLS handshake and start_tls returning the transport
        # to pause, resume and write: fed once it has.
        self._early: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        remote = remote_of(transport.get_extra_info("peername"))
        admission = self.gate.admit(remote.rsplit(":", 1)[0], self.listener)
        if admission is None:
            transport.close()  # over a limit: closed before anything is read
            return
        if self.tls is not None:
            transport.pause_reading()  # the ClientHello is for start_tls, not for us
        self.connection = Connection(self, admission, remote, self.gate.limits)
        start_tls = None if self.tls is None else self.start_tls
        self.task = asyncio.get_running_loop().create_task(self.serve(self.connection, start_tls))

    def data_received(self, data: bytes) -> None:
        if self._early is not None:
            self._early.append(data)
        elif self.connection is not None:
            self.connection.feed(data)

    def eof_received(self) -> bool:
        return False  # a half-closed client is a gone client

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None:
            self.connection.lost()

    async def start_tls(self) -> None:
        """Wrap the connection in TLS (the handshake); ConnectionError if it fails."""
        assert self.transport is not None
        assert self.tls is not None
        loop = asyncio.get_running_loop()
        self._early = []
        try:
            transport = await loop.start_tls(self.transport, self, self.tls, server_side=True)
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake failed: {exc.reason}") from None
        if transport is None:
            raise ConnectionError("TLS handshake failed")
        self.transport = transport
        early, self._early = self._early, None
        if self.connection is not None:
            for data in early:
                self.connection.feed(data)

    # -- Link ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class WebSocketLink:
    """One MQTT-over-WebSocket connection: frames in to its Connection, writes out as frames."""

    def __init__(self, socket: ServerConnection) -> None:
        self.socket = socket
        self.connection: Connection | None = None
        self._out: list[bytes] = []
        self._sender: asyncio.Task[None] | None = None
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False

    async def pump(self, connection: Connection) -> None:
        """Feed every binary frame to the connection until the socket closes."""
        try:
            while True:
                await self._readable.wait()
                message = await self.socket.recv()
                if isinstance(message, str):
                    log.info("mqtt_websocket_text_frame")  # MQTT over WebSocket is binary
                    break
                connection.feed(message)
        except ConnectionClosed:
            pass
        finally:
            connection.lost()
            await self.socket.close()

    async def _send(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while self._out:
                data, self._out = b"".join(self._out), []
                await self.socket.send(data)
            if self._closing:
                await self.socket.close()

    def _start_sending(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    # -- Link ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self._closing:
            self._out.append(data)
            self._start_sending()

    def close(self) -> None:
        self._closing = True
        self._start_sending()

    def abort(self) -> None:
        self._closing = True
        self._out = []
        self.socket.transport.abort()

    def pause_reading(self) -> None:
        self._readable.clear()

    def resume_reading(self) -> None:
        self._readable.set()


class Listeners:
    """The broker's servers: started together, closed together."""

    def __init__(self, gate: ConnectionGate, serve: Serve) -> None:
        self.gate = gate
        self.serve = serve
        self._tcp: list[asyncio.Server] = []
        self._ws: list[Server] = []
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self, configs: list[ListenerConfig]) -> None:
        """Listen on every configured address."""
        loop = asyncio.get_running_loop()
        for config in configs:
            if config.kind == "tcp":

                def protocol(config: ListenerConfig = config) -> TcpLink:
                    return TcpLink(self.gate, self.serve, config.name, config.tls)

                server = await loop.create_server(
                    protocol, config.host, config.port, reuse_address=True
                )
                self._tcp.append(server)
            else:
                self._ws.append(
                    await serve(
                        partial(self._websocket, config.name),
                        config.host,
                        config.port,
                        subprotocols=["mqtt"],  # type: ignore[list-item]
                        ssl=config.tls,
                        max_size=self.gate.limits.max_packet_bytes,
                        compression=None,
                    )
                )

    async def _websocket(self, listener: str, socket: ServerConnection) -> None:
        remote = remote_of(socket.remote_address)
        admission = self.gate.admit(remote.rsplit(":", 1)[0], listener)
        if admission is None:
            await socket.close()
            return
        link = WebSocketLink(socket)
        connection = Connection(link, admission, remote, self.gate.limits)
        link.connection = connection
        pump = asyncio.get_running_loop().create_task(link.pump(connection))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        try:
            await self.serve(connection, None)
        finally:
            await asyncio.wait([pump], timeout=5)

    def close(self) -> None:
        """Stop accepting connections (those open stay: the broker closes them)."""
        for server in self._tcp:
            server.close()
        for ws in self._ws:
            ws.close(close_connections=False)

    async def wait_closed(self) -> None:
        """Until the servers are closed."""
        for ws in self._ws:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.wait_closed(), 5)
        self._tcp, self._ws = [], []
