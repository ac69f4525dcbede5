"""How the platform reaches devices over MQTT, behind one small interface.

`DeviceTransport` is what the application wiring uses (start, stop, ready, drop a device);
it is also the device-message layer's `DeviceOutbox` (send to a device, who is online).
`EmbeddedTransport` implements it with the broker inside the process; an external broker
cluster (Mosquitto, EMQX) with shared subscriptions is another class of the same shape.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import orjson
import structlog

from fleetcore.config import Settings
from fleetcore.device_messages.metrics import MESSAGES_OUT
from fleetcore.mqtt.broker import FleetBroker
from fleetcore.mqtt.gateway import MqttGateway
from fleetcore.mqtt.limits import MqttLimits
from fleetcore.ops.readiness import NotReady
from fleetcore_protocol.messages import Family, OutboundMessage, encode

log = structlog.get_logger(__name__)


class DeviceTransport(Protocol):
    """Messages to devices, and who is connected."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def send(self, recipient: str, message: OutboundMessage) -> Family | None:
        """Send to that device's subscribed sessions only; the topic family that took it."""
        ...

    def online(self) -> set[str]:
        """Ids of the devices connected now."""
        ...

    async def disconnect(self, device_id: uuid.UUID) -> int:
        """Close every connection of the device; returns how many sessions ended."""
        ...

    async def ready(self) -> None:
        """Raise NotReady unless the transport is serving."""
        ...


def broker_config(settings: Settings) -> dict[str, Any]:
    """The broker's listeners from our settings (TCP; TLS and WebSocket if set)."""
    host = settings.mqtt_host or settings.host
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": f"{host}:{settings.mqtt_port}", "max_connections": 0}
    }
    if settings.mqtt_tls_cert and settings.mqtt_tls_key:
        listeners["tls"] = {
            "type": "tcp",
            "bind": f"{host}:{settings.mqtt_tls_port}",
            "ssl": True,
            "certfile": str(settings.mqtt_tls_cert),
            "keyfile": str(settings.mqtt_tls_key),
        }
    if settings.mqtt_ws_port:
        listeners["ws"] = {"type": "ws", "bind": f"{host}:{settings.mqtt_ws_port}"}
    return {
        "listeners": listeners,
        "session_expiry_interval": settings.mqtt_session_expiry_s,
    }


class EmbeddedTransport:
    """The broker inside the process, with the gateway deciding for it."""

    name = "mqtt-broker"

    def __init__(self, settings: Settings, gateway: MqttGateway) -> None:
        self.settings = settings
        self.gateway = gateway
        self.broker: FleetBroker | None = None

    async def start(self) -> None:
        """Listen on the configured ports."""
        config = broker_config(self.settings)
        self.broker = FleetBroker(config, self.gateway, MqttLimits.from_settings(self.settings))
        self.gateway.attach(self.broker)
        self.gateway.messages.attach(self)
        await self.broker.start()
        log.info("mqtt_listening", listeners={k: v["bind"] for k, v in config["listeners"].items()})

    async def stop(self) -> None:
        """Close every connection; what was acknowledged is already in the pipeline."""
        if self.broker is not None:
            await self.broker.shutdown()
            await self.gateway.detach()
            await self.gateway.messages.detach()
            self.broker = None

    def send(self, recipient: str, message: OutboundMessage) -> Family | None:
        """To the recipient's own sessions, on the first topic family one subscribed to."""
        if self.broker is None:
            return None
        for family in message.families:
            encoded = encode(message, recipient, family, dumps=orjson.dumps)
            if encoded is None:
                continue
            topic, payload = encoded
            if self.broker.deliver(recipient, topic, payload, 1, retain=message.retain):
                MESSAGES_OUT.inc()
                return family
        return None

    def online(self) -> set[str]:
        """Ids of connected devices."""
        return self.broker.connected_keys() if self.broker is not None else set()

    async def disconnect(self, device_id: uuid.UUID) -> int:
        """Drop the device's connections and sessions."""
        return await self.broker.drop(str(device_id)) if self.broker is not None else 0

    async def ready(self) -> None:
        """The broker has started and not stopped."""
        if self.broker is None or not self.broker.serving:
            raise NotReady("the MQTT broker is not running")
