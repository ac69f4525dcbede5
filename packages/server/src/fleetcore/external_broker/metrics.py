"""Prometheus metrics of the platform's client on an external broker."""

from prometheus_client import Counter, Gauge

CONNECTED = Gauge("fleetcore_mqtt_external_connected", "1 while connected to the external broker.")
RECEIVED = Counter("fleetcore_mqtt_external_received_total", "Messages taken from the broker.")
ACKED = Counter(
    "fleetcore_mqtt_external_acked_total", "QoS 1 messages acknowledged (after they were durable)."
)
REDELIVERIES = Counter(
    "fleetcore_mqtt_external_redeliveries_total",
    "Connections dropped so the broker delivers unacknowledged messages again (a failed write).",
)
LANE_HELD = Gauge(
    "fleetcore_mqtt_lane_held", "1 while this process consumes the ordered lane (lane.py)."
)
LANE_CONNECTED = Gauge(
    "fleetcore_mqtt_lane_connected", "1 while the ordered lane's connection is up here."
)
LANE_SKIPPED = Counter(
    "fleetcore_mqtt_external_lane_skipped_total",
    "Messages of ordered channels a shared member acknowledged unhandled: the lane takes them.",
)
