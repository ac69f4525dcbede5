"""Prometheus metrics of the MQTT transport."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTED = Gauge("fleetcore_mqtt_connections", "MQTT connections open now.")
CONNECTIONS_ADMITTED = Counter(
    "fleetcore_mqtt_connections_admitted_total", "MQTT connections let past the limits at accept."
)
CONNECTIONS_REFUSED = Counter(
    "fleetcore_mqtt_connections_refused_total", "MQTT connections refused.", ["reason"]
)
CLOSED = Counter(
    "fleetcore_mqtt_connections_closed_total",
    "MQTT connections the server closed for a limit (keep-alive, packet size, lifetime).",
    ["reason"],
)
MESSAGES = Counter("fleetcore_mqtt_messages_total", "MQTT messages handled.", ["direction"])
ACL_DENIED = Counter(
    "fleetcore_mqtt_acl_denied_total", "Publishes and subscriptions refused by the ACL.", ["action"]
)

# Children looked up once: these are counted for every message.
MESSAGES_IN = MESSAGES.labels("in")
MESSAGES_OUT = MESSAGES.labels("out")
