"""Who a device is and which topics are its own: one set of rules for every broker.

The embedded broker (fleetcore.mqtt.gateway), the layer's publish check (inbound) and the
HTTP endpoints an external broker calls (fleetcore.broker_auth) all decide with these.
"""

from __future__ import annotations

import uuid

from fleetcore_protocol import topics
from fleetcore_protocol.topics import TopicError

PROVISION_USERNAME = "provision"
# The platform's own MQTT client ids (ingest workers, the ordered lane, api publishers) start
# so. A broker gives a client id's session to whoever connects with it last: a device using
# one could take a worker's session over, so only the platform may.
PLATFORM_CLIENT_ID_PREFIX = "fleetcore-"


class NotAllowed(Exception):
    """A topic the device may not publish on; the message says why."""


def credentials(username: str | None, password: str | None) -> tuple[str | None, str | None]:
    """(token, claimed device id) from an MQTT username and password: the token as username,
    or the device id as username and the token as password."""
    if password:
        try:
            return password, str(uuid.UUID(username or ""))
        except ValueError:
            return username or password, None
    return username, None


def native_prefix(device_key: str) -> str:
    """The start of every native topic of this device."""
    return f"{topics.NATIVE_PREFIX}/{device_key}/"


def own_namespace(device_key: str, topic: str) -> bool:
    """Whether a topic or filter lies within this device's topics (native or ThingsBoard,
    its OTA chunk topics included: a connection hears only what is sent to it)."""
    return topic.startswith(
        (native_prefix(device_key), topics.THINGSBOARD_PREFIX + "/", *topics.OTA_PREFIXES)
    )


def may_subscribe(device_key: str, topic_filter: str) -> bool:
    """Only filters that can match nothing but this device's own topics (so no wildcard
    above its id, no shared subscription, nothing of another device)."""
    return own_namespace(device_key, topic_filter)


def upstream_topic(device_key: str, topic: str) -> topics.Topic:
    """The parsed topic a device publishes on: TopicError outside the grammar, NotAllowed
    for another device's topic or one that flows to the device."""
    parsed = topics.parse(topic)
    if parsed.device_id is not None and parsed.device_id != device_key:
        raise NotAllowed("a device publishes on its own topics")
    if parsed.channel not in topics.UPSTREAM:
        raise NotAllowed("this topic flows to the device")
    return parsed


def may_publish(device_key: str, topic: str) -> bool:
    """Whether a broker lets this device publish on `topic`. A topic of its own outside the
    grammar passes: the layer dead-letters it with its reason, as on the embedded broker."""
    try:
        upstream_topic(device_key, topic)
    except TopicError:
        return own_namespace(device_key, topic)
    except NotAllowed:
        return False
    return True


def provisioner_may(action: str, topic: str) -> bool:
    """A provisioning client only asks for credentials and hears the answer."""
    if action == "publish":
        return topic == topics.PROVISION_REQUEST
    return topic == topics.PROVISION_RESPONSE
