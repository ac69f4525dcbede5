"""The MQTT link: paho-mqtt 2 over MQTT 5, persistent session, birth and last will, QoS 1.

The network loop runs in its own thread and reconnects with exponential backoff and jitter
(not paho's built-in fixed doubling). `publish` waits for the PUBACK and says whether the
platform stored the message: over MQTT 5 a PUBACK with a reason code of 0x80 or more means
it did not.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fleetcore_agent.config import AgentConfig
from fleetcore_agent.resilience import Backoff
from fleetcore_protocol.topics import Channel, native

log = logging.getLogger("fleetcore_agent.link")

ONLINE = json.dumps({"status": "online"}).encode()
OFFLINE = json.dumps({"status": "offline"}).encode()
# PUBACK reasons that mean the message can never be stored as it is: drop, do not resend.
REFUSED_FOR_GOOD = frozenset({0x90, 0x95, 0x99})


@dataclass(frozen=True, slots=True)
class Ack:
    """The outcome of one publish: stored, refused for good, or try again later."""

    ok: bool
    reason: int | None  # None: no PUBACK (timeout, disconnect, not connected)

    @property
    def refused(self) -> bool:
        """The platform will never take this message."""
        return self.reason is not None and self.reason in REFUSED_FOR_GOOD


Handler = Callable[[str, bytes], None]


class Link:
    """One device connection to the platform's broker."""

    def __init__(
        self, config: AgentConfig, *, on_message: Handler, on_connect: Callable[[], None]
    ) -> None:
        self.config = config
        self.on_message = on_message
        self.on_connect_hook = on_connect
        self.connected = threading.Event()
        self.reconnects = 0
        self.connects = 0
        self.down_since: float = time.monotonic()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._done: dict[int, int] = {}
        self._abandoned: set[int] = set()
        self._thread: threading.Thread | None = None
        self.backoff = Backoff(config.backoff_min_s, config.backoff_max_s)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fleetcore-agent-{config.device_id}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(config.device_id, config.token)
        client.will_set(self.topic(Channel.STATUS), OFFLINE, qos=1)
        if config.mqtt_tls:
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self.client = client

    def topic(self, channel: Channel, command_id: str | None = None) -> str:
        """This device's native topic for a channel."""
        return native(self.config.device_id, channel, command_id)

    def down_for(self) -> float:
        """Seconds since the link was last connected (0 while connected)."""
        return 0.0 if self.connected.is_set() else time.monotonic() - self.down_since

    # The network thread -------------------------------------------------------------

    def start(self) -> None:
        """Start connecting in the background."""
        self._thread = threading.Thread(target=self._run, name="mqtt-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Say goodbye (the platform sees offline) and stop the network thread."""
        if self.connected.is_set():
            info = self.client.publish(self.topic(Channel.STATUS), OFFLINE, qos=1)
            self._wait(info.mid, 2.0)
        self.client.disconnect()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _open(self) -> bool:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.config.session_expiry_s
        try:
            self.client.connect(
                self.config.mqtt_host,
                self.config.mqtt_port,
                self.config.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        except (OSError, ValueError) as exc:
            log.info("mqtt connect failed: %s", exc)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._open():
                self._stop.wait(self.backoff.next())
                continue
            opened = time.monotonic()
            while not self._stop.is_set():
                rc = self.client.loop(timeout=0.2)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
                stalled = time.monotonic() - opened > self.config.keepalive_s
                if not self.connected.is_set() and stalled:
                    log.info("mqtt: no CONNACK in time")  # a dead path that accepted TCP
                    self.client.disconnect()
            self._lost()
            if not self._stop.is_set():
                self._stop.wait(self.backoff.next())

    def _lost(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self.down_since = time.monotonic()
        with self._cond:
            self._cond.notify_all()

    # paho callbacks (network thread) --------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt connection refused: %s", reason)
            client.disconnect()
            return
        self.backoff.reset()
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
        client.subscribe([(self.topic(Channel.COMMANDS), 1), (self.topic(Channel.CONFIG), 1)])
        client.publish(self.topic(Channel.STATUS), ONLINE, qos=1)
        self.connected.set()
        log.info("mqtt connected (session present: %s)", flags.session_present)
        # The hook may publish and wait for PUBACKs: not on this thread.
        threading.Thread(target=self.on_connect_hook, daemon=True).start()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        log.info("mqtt disconnected: %s", reason)
        self._lost()

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: Any, _props: Any
    ) -> None:
        with self._cond:
            if mid in self._abandoned:
                self._abandoned.discard(mid)
                return
            self._done[mid] = int(reason.value)
            self._cond.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: Any) -> None:
        self.on_message(str(message.topic), bytes(message.payload))

    # Sending (any thread but the network one) ----------------------------------------

    def publish(self, topic: str, payload: bytes, *, timeout: float | None = None) -> Ack:
        """Publish at QoS 1 and wait for the PUBACK (or give up after `timeout`)."""
        if not self.connected.is_set():
            return Ack(False, None)
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._forget(info.mid)
            return Ack(False, None)
        reason = self._wait(info.mid, self.config.ack_timeout_s if timeout is None else timeout)
        if reason is None:
            return Ack(False, None)
        return Ack(reason < 0x80, reason)

    def _wait(self, mid: int, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._done:
                left = deadline - time.monotonic()
                if left <= 0 or not self.connected.is_set():
                    self._abandoned.add(mid)
                    return None
                self._cond.wait(min(left, 0.5))
            return self._done.pop(mid)

    def _forget(self, mid: int) -> None:
        with self._cond:
            if self._done.pop(mid, None) is None:
                self._abandoned.add(mid)
