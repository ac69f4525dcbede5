"""How one simulated device talks to the platform: MQTT (paho-mqtt 2) or HTTP (httpx).

Every paho client runs on the caller's asyncio loop (its socket is watched with add_reader /
add_writer, as paho's own asyncio example does), so a thousand devices need no thread each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from fleetcore.simulator.provision import SimDevice

MQTT_TOPIC = "v1/devices/me/telemetry"
HTTP_PATH = "/api/v1/devices/me/telemetry"
MAX_INFLIGHT = 100  # unacknowledged QoS 1 publishes per connection


@dataclass
class Stats:
    """Readings counted across the fleet; a reading is one key's value at one time."""

    sent: int = 0
    acked: int = 0  # acknowledged = committed by the platform
    errors: int = 0  # refused, failed, or not sent because the device was offline
    samples: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    connected: int = 0
    errors_after_send: int = 0  # the part of `errors` that had been counted as sent

    @property
    def pending(self) -> int:
        """Readings sent and neither acknowledged nor failed yet."""
        return self.sent - self.acked - self.errors_after_send


class Link(Protocol):
    """One device's connection to the platform."""

    @property
    def ready(self) -> bool:
        """True when a reading sent now can be delivered."""

    async def open(self) -> None:
        """Connect (MQTT) or get ready (HTTP)."""

    async def send(self, ts: int, values: dict[str, float]) -> None:
        """Send one message; counts go to the shared Stats."""

    async def close(self) -> None:
        """Disconnect."""


def payload(ts: int, values: dict[str, float]) -> bytes:
    """The telemetry body both transports send."""
    return orjson.dumps({"ts": ts, "values": values})


class MqttLink:
    """A device's own MQTT connection (username = its token), QoS 1, MQTT 3.1.1."""

    def __init__(self, device: SimDevice, host: str, port: int, stats: Stats) -> None:
        self.device, self.host, self.port, self.stats = device, host, port, stats
        self._loop = asyncio.get_running_loop()
        self._inflight: dict[int, int] = {}  # message id -> readings
        self._misc: asyncio.Task[None] | None = None
        self._connack: asyncio.Future[int] | None = None
        self.connected = False
        self.last_error = ""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{device.name}-{device.id.hex[:8]}",
            protocol=paho.MQTTv311,
        )
        client.username_pw_set(device.token)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client

    @property
    def ready(self) -> bool:
        """Connected and acknowledged by the broker."""
        return self.connected

    async def open(self) -> None:
        """Connect and wait for the CONNACK; raises ConnectionError if refused."""
        self._connack = self._loop.create_future()
        try:
            # A blocking TCP connect: quick on a LAN, and it keeps every socket callback on
            # this loop's thread, where add_reader must be called.
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            self.last_error = str(exc)
            raise ConnectionError(f"{self.device.name}: {exc}") from None
        code = await asyncio.wait_for(self._connack, 30)
        if code:
            raise ConnectionError(f"{self.device.name}: {self.last_error}")

    async def send(self, ts: int, values: dict[str, float]) -> None:
        """Publish at QoS 1; the readings count as acked on the PUBACK (after the commit)."""
        count = len(values)
        info = self.client.publish(MQTT_TOPIC, payload(ts, values), qos=1)
        self.stats.sent += count
        if info.rc == paho.MQTT_ERR_SUCCESS:
            self._inflight[info.mid] = count
        else:  # not delivered; paho would hold it for a reconnect, which we do not count on
            self.stats.errors += count
            self.stats.errors_after_send += count

    async def reconnect(self) -> None:
        """Try once to connect again after a lost connection.

        Publishes still unacknowledged stay pending if it succeeds (paho sends them again);
        if it fails they count as errors: they may or may not have been stored.
        """
        self._connack = self._loop.create_future()
        try:
            self.client.reconnect()
            refused = await asyncio.wait_for(self._connack, 30)
        except (OSError, TimeoutError) as exc:
            self.last_error = str(exc) or repr(exc)
            refused = 1
        if refused:
            lost = sum(self._inflight.values())
            self._inflight.clear()
            self.stats.errors += lost
            self.stats.errors_after_send += lost

    async def close(self) -> None:
        """DISCONNECT and close the socket (what is still unacknowledged stays pending)."""
        if self.connected:
            self.client.disconnect()
            with contextlib.suppress(OSError, ValueError):
                self.client.loop_write()  # the DISCONNECT goes out now; paho then closes
        sock = self.client.socket()
        if sock is not None:
            self._remove(sock)
            with contextlib.suppress(OSError):
                sock.close()
        if self._misc is not None:
            self._misc.cancel()

    # -- paho callbacks (all on the loop's thread) ----------------------------------------

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        code = 1 if reason.is_failure else 0
        if code:
            self.last_error = f"connection refused: {reason}"
        else:
            self.connected = True
            self.stats.connected += 1
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connected:
            self.stats.connected -= 1
        self.connected = False
        self.last_error = f"disconnected: {reason}"
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(1)

    def _on_publish(self, _c: Any, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        count = self._inflight.pop(mid, 0)
        self.stats.acked += count

    def _on_socket_open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.add_reader(sock, client.loop_read)
        if self._misc is None or self._misc.done():
            self._misc = self._loop.create_task(self._misc_loop())

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        self._remove(sock)

    def _remove(self, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._misc is not None:
            self._misc.cancel()

    def _on_register_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self._loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    async def _misc_loop(self) -> None:
        """Keep-alive pings and time-outs, as paho's own loop would do."""
        while True:
            if self.client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                return
            await asyncio.sleep(1)


class HttpLink:
    """A device posting to /api/v1/devices/me/telemetry with its X-Device-Token."""

    def __init__(self, device: SimDevice, http: httpx.AsyncClient, stats: Stats) -> None:
        self.device, self.http, self.stats = device, http, stats
        self.headers = {"X-Device-Token": device.token, "Content-Type": "application/json"}
        self.last_error = ""

    @property
    def ready(self) -> bool:
        """HTTP needs no connection of its own."""
        return True

    async def open(self) -> None:
        """Nothing to do: the shared client keeps connections alive."""

    async def send(self, ts: int, values: dict[str, float]) -> None:
        """POST and wait for the answer, which comes after the commit."""
        count = len(values)
        self.stats.sent += count
        try:
            answer = await self.http.post(
                HTTP_PATH, content=payload(ts, values), headers=self.headers
            )
        except httpx.HTTPError as exc:
            self.last_error = repr(exc)
            self._failed(count)
            return
        if answer.status_code != 200:
            self.last_error = f"HTTP {answer.status_code}: {answer.text[:200]}"
            self._failed(count)
            return
        body = answer.json()
        acked = int(body.get("stored", 0)) + int(body.get("duplicates", 0))
        self.stats.acked += acked
        self._failed(count - acked)

    async def close(self) -> None:
        """The shared client is closed by its owner."""

    def _failed(self, count: int) -> None:
        self.stats.errors += count
        self.stats.errors_after_send += count


LinkFactory = Callable[[SimDevice], Link]
