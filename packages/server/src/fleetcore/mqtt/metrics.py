"""Prometheus metrics of the MQTT transport."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from fleetcore.device_messages import metrics as message_metrics

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
# Counted by the device-message layer, for every transport; named here as before.
MESSAGES, MESSAGES_IN, MESSAGES_OUT, ACL_DENIED = (
    message_metrics.MESSAGES,
    message_metrics.MESSAGES_IN,
    message_metrics.MESSAGES_OUT,
    message_metrics.ACL_DENIED,
)
