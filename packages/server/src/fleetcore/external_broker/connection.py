"""Where the external broker is and how the platform's own clients log in to it.

FLEETCORE_MQTT_URL carries the platform client's credentials (mqtt://user:password@host:port
or mqtts://...). Every platform client (ingest workers, the command sender, the dynamic-security
sync) connects with them; each gets its own client id so they never take each other over.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from fleetcore.config import Settings
from fleetcore.device_messages.acl import PLATFORM_CLIENT_ID_PREFIX


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed FLEETCORE_MQTT_URL; `repr` hides the password."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    ca_file: Path | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: Path | None = None) -> BrokerUrl:
        """mqtt://user:password@host:port (1883 by default) or mqtts:// (8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://user:password@host:port or mqtts://...")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            ca_file=ca_file,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> BrokerUrl:
        """The configured broker; ValueError when FLEETCORE_MQTT_URL is not set."""
        if settings.mqtt_url is None:
            raise ValueError("FLEETCORE_MQTT_URL is not set")
        return cls.parse(settings.mqtt_url.get_secret_value(), ca_file=settings.mqtt_ca_file)

    def __repr__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"BrokerUrl({scheme}://{self.username or ''}@{self.host}:{self.port})"

    __str__ = __repr__

    def client(
        self,
        role: str,
        *,
        client_id: str | None = None,
        manual_ack: bool = False,
        reconnect: bool = True,
    ) -> paho.Client:
        """A paho-mqtt MQTT 5 client with these credentials (not yet connected); its client
        id is `fleetcore-<role>-<random>` unless given. Without `reconnect`, a connection
        that ends stays ended (its first one is still tried until it succeeds)."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"{PLATFORM_CLIENT_ID_PREFIX}{role}-{uuid.uuid4().hex[:12]}",
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
            reconnect_on_failure=reconnect,
        )
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            client.tls_set_context(context)
        return client
