"""paho-mqtt 2 (what real devices and SDKs run) driven from async tests.

paho runs its network loop in a thread; every callback lands in a queue the test awaits
with a deadline, so a test never blocks the event loop the broker runs on.
"""

from __future__ import annotations

import asyncio
import queue
import socket
from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # connect | subscribe | publish | message | disconnect
    data: dict[str, Any]


class PahoDevice:
    """One paho client (MQTT 3.1.1 or 5) with its callbacks turned into awaitable events."""

    def __init__(self, client_id: str, *, mqtt5: bool = True, transport: str = "tcp") -> None:
        protocol = mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport=transport,  # type: ignore[arg-type]
        )
        self.events: queue.Queue[Event] = queue.Queue()
        self._backlog: list[Event] = []
        c = self.client
        c.on_connect = lambda _c, _u, flags, rc, props: self._put(
            "connect", reason=rc.value, present=flags.session_present, properties=props
        )
        c.on_subscribe = lambda _c, _u, mid, codes, props: self._put(
            "subscribe", mid=mid, reasons=[code.value for code in codes]
        )
        c.on_publish = lambda _c, _u, mid, rc, props: self._put("publish", mid=mid, reason=rc.value)
        c.on_message = lambda _c, _u, m: self._put(
            "message", topic=m.topic, payload=m.payload, retain=m.retain, qos=m.qos
        )
        c.on_disconnect = lambda _c, _u, _flags, rc, props: self._put("disconnect", reason=rc.value)

    def _put(self, kind: str, **data: Any) -> None:
        self.events.put(Event(kind, data))

    async def connect(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        clean_start: bool = True,
        session_expiry: int | None = None,
        will: tuple[str, bytes] | None = None,
    ) -> Event:
        """Connect and start the network thread; returns the connect event."""
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        properties = None
        if self.client.protocol == mqtt.MQTTv5:
            properties = Properties(PacketTypes.CONNECT)
            if session_expiry is not None:
                properties.SessionExpiryInterval = session_expiry
            await asyncio.to_thread(
                self.client.connect,
                "127.0.0.1",
                port,
                30,
                clean_start=clean_start,
                properties=properties,
            )
        else:
            await asyncio.to_thread(self.client.connect, "127.0.0.1", port, 30)
        self.client.loop_start()
        return await self.next("connect")

    async def next(self, kind: str, wait_s: float = 10.0) -> Event:
        """The next event of this kind (others are kept for their own next())."""
        for index, event in enumerate(self._backlog):
            if event.kind == kind:
                return self._backlog.pop(index)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} event within {wait_s}s")
            try:
                event = await asyncio.to_thread(self.events.get, True, min(remaining, 0.5))
            except queue.Empty:
                continue
            if event.kind == kind:
                return event
            self._backlog.append(event)

    async def subscribe(self, *filters: str) -> list[int]:
        """Subscribe at QoS 1; returns the reason code (granted QoS) per filter."""
        self.client.subscribe([(f, 1) for f in filters])
        return list((await self.next("subscribe")).data["reasons"])

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish and wait for the acknowledgement; returns its reason code."""
        self.client.publish(topic, payload, qos=qos)
        return int((await self.next("publish")).data["reason"])

    def stop(self) -> None:
        """Disconnect politely and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self) -> None:
        """End the connection without DISCONNECT (the will fires)."""
        self.client.reconnect_delay_set(60, 60)
        sock = self.client.socket()
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)  # paho notices and closes its own socket
