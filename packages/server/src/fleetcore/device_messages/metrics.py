"""Prometheus counters of device messages (named for MQTT, where they were first counted)."""

from __future__ import annotations

from prometheus_client import Counter

MESSAGES = Counter("fleetcore_mqtt_messages_total", "MQTT messages handled.", ["direction"])
ACL_DENIED = Counter(
    "fleetcore_mqtt_acl_denied_total", "Publishes and subscriptions refused by the ACL.", ["action"]
)

# Children looked up once: these are counted for every message.
MESSAGES_IN = MESSAGES.labels("in")
MESSAGES_OUT = MESSAGES.labels("out")
