"""One MQTT 3.1.1 client after its CONNECT: the packets it sends, the messages it is sent.

A PUBLISH is handed to the application synchronously, in order, before the next packet is
looked at (fleetcore.mqtt.connection frames them), and acknowledged only when the
application says it is durable: at once if `accept` answered nothing or a reason code,
else when the awaitable it answered completes (no task per message when that is a
future). A message that cannot be stored is never acknowledged: the connection ends and
the client sends it again. Inbound QoS 2 is taken once per packet identifier and answered
PUBREC when durable, PUBCOMP on the PUBREL.

SUBSCRIBE is answered at once: per filter, the granted QoS (at most 1: the platform never
sends QoS 2) or 0x80 for a filter that is malformed or that the ACL refuses. What the
application has retained for the new filter is then sent, and the application told
(`subscribed`), in order, on the connection's one follow-up task.

Outgoing QoS 1 messages stay in the session until their PUBACK (see fleetcore.mqtt.session).

The MQTT 5 handler (handler5.py) extends this class; runs on the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from fleetcore.mqtt import mqtt5, mqtt311
from fleetcore.mqtt.connection import Connection
from fleetcore.mqtt.hooks import ClientInfo, Inbound, Principal
from fleetcore.mqtt.mqtt311 import (
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBLISH,
    PUBREL,
)
from fleetcore.mqtt.session import Outgoing, Session
from fleetcore_protocol.topics import topic_matches

if TYPE_CHECKING:
    from fleetcore.mqtt.broker import FleetBroker

log = logging.getLogger(__name__)

# Server-initiated ends, as MQTT 5 reason codes (3.1.1 just closes the connection).
SESSION_TAKEN_OVER = mqtt5.SESSION_TAKEN_OVER
ADMINISTRATIVE_ACTION = mqtt5.ADMINISTRATIVE_ACTION
SERVER_SHUTTING_DOWN = mqtt5.SERVER_SHUTTING_DOWN
KEEP_ALIVE_TIMEOUT = mqtt5.KEEP_ALIVE_TIMEOUT
PACKET_TOO_LARGE = mqtt5.PACKET_TOO_LARGE
TOPIC_NAME_INVALID = mqtt5.TOPIC_NAME_INVALID
# Messages of one connection handed to the application and not yet durable; past this the
# connection is read no further until some are (a slow database pushes back on the client
# through TCP instead of growing memory with every message it sends).
MAX_UNSTORED = 100


def valid_filter(topic_filter: str) -> bool:
    """Whether a topic filter is well formed: not empty, '+' and '#' alone in their level,
    '#' only last (4.7.1)."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if ("+" in level or "#" in level) and len(level) > 1:
            return False
        if level == "#" and index != len(levels) - 1:
            return False
    return True


class Handler:
    """An MQTT 3.1.1 client's session on its connection (see the module docstring)."""

    protocol = mqtt311.PROTOCOL_LEVEL

    def __init__(
        self,
        broker: FleetBroker,
        connection: Connection,
        session: Session,
        principal: Principal,
        client: ClientInfo,
    ) -> None:
        self.broker = broker
        self.hooks = broker.hooks
        self.connection = connection
        self.session = session
        self.principal = principal
        self.client = client
        self.taken_over = False  # a new connection owns the session now
        self.replaces: Handler | None = None  # the connection this one took over, until reported
        self.finished = asyncio.Event()  # set once the broker is done with the connection
        self.max_packet_size: int | None = None  # the largest packet the client takes (MQTT 5)
        self._accept = broker.hooks.accept
        self._send = connection.send
        self._unstored = 0
        self._qos2: dict[int, bool] = {}  # inbound QoS 2 ids: True once PUBREC is sent
        self._follow_up: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    # -- packets from the client --------------------------------------------------------

    def packet(self, first: int, body: bytes) -> None:
        """One whole packet after the CONNECT; ProtocolError if it is malformed."""
        kind = first >> 4
        if kind == PUBLISH:  # the hot path first
            message = mqtt311.parse_publish(first & 0x0F, body)
            self.inbound(
                message.topic, message.payload, message.qos, message.retain, message.packet_id
            )
            return
        packet = mqtt311.parse_packet(first, body)
        if isinstance(packet, mqtt311.Ack):
            if kind == PUBACK:
                self.session.inflight.pop(packet.packet_id, None)
            elif kind == PUBREL:
                self._released(packet.packet_id)
            # PUBREC, PUBCOMP: the platform never sends QoS 2, nothing waits for these
        elif isinstance(packet, mqtt311.Subscribe):
            codes = self.subscribe(packet.requests)
            self._send(mqtt311.suback(packet.packet_id, codes))
        elif isinstance(packet, mqtt311.Unsubscribe):
            self.unsubscribe(packet.topic_filters)
            self._send(mqtt311.unsuback(packet.packet_id))
        elif kind == PINGREQ:
            self._send(mqtt311.pingresp())
        elif kind == DISCONNECT:
            self.disconnected(normal=True)

    def protocol_error(self, reason: int) -> None:
        """The client sent a malformed packet: 3.1.1 can only close the connection."""

    def goodbye(self, reason: int) -> None:
        """Tell the client why the server ends the connection: 3.1.1 has no way to."""

    def close(self, reason: int) -> None:
        """End the connection from the server side, saying why where the protocol can."""
        self.goodbye(reason)
        self.connection.close()

    def disconnected(self, *, normal: bool) -> None:
        """The client said goodbye; `normal` unless it asked for its will (MQTT 5 0x04)."""
        self.connection.normal_end = normal
        self.connection.close()

    # -- inbound PUBLISH ----------------------------------------------------------------

    def inbound(
        self, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int | None
    ) -> None:
        """Hand a message to the application; acknowledge it once it is durable."""
        if qos == 2 and packet_id in self._qos2:
            return  # a retransmission of a message we already took; PUBREC is on its way
        if topic and "+" not in topic and "#" not in topic:
            verdict = self._accept(self.principal, Inbound(topic, payload, qos, retain))
        else:
            log.info("mqtt_invalid_topic", extra={"client": self.session.key})
            verdict = TOPIC_NAME_INVALID
        if qos == 2:
            self._qos2[packet_id or 0] = False  # taken; PUBREC once durable
        if verdict is None or isinstance(verdict, int):
            if qos == 1:
                self._send(self.puback_bytes(packet_id or 0, verdict or 0))
            elif qos == 2:
                self._received(packet_id or 0, verdict or 0)
            return
        durable = verdict if isinstance(verdict, asyncio.Future) else self._task(verdict)
        if not durable.done():
            self._hold(durable)
        if qos:
            done = self._acknowledge if qos == 1 else self._received
            durable.add_done_callback(partial(self._when_durable, done, packet_id or 0))

    def _task(self, awaitable: Awaitable[object]) -> asyncio.Future[object]:
        future = asyncio.ensure_future(awaitable)
        self._tasks.add(future)
        future.add_done_callback(self._tasks.discard)
        return future

    def _hold(self, pending: asyncio.Future[Any]) -> None:
        """Count a message not yet durable until it is (see MAX_UNSTORED)."""
        self._unstored += 1
        if self._unstored >= MAX_UNSTORED:
            self.connection.hold()
        pending.add_done_callback(self._durable)

    def _durable(self, _: asyncio.Future[Any]) -> None:
        self._unstored -= 1
        if self._unstored < MAX_UNSTORED:
            self.connection.release()

    def _when_durable(
        self, done: Callable[[int, int], None], packet_id: int, future: asyncio.Future[Any]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            # Not stored: no acknowledgement. End the connection so the client resends.
            error = None if future.cancelled() else future.exception()
            log.warning("mqtt_message_not_stored", extra={"error": repr(error)})
            self.connection.close()
            return
        answer = future.result()  # a gateway task may answer an MQTT 5 reason code
        coded = isinstance(answer, int) and not isinstance(answer, bool)
        done(packet_id, answer if coded else 0)

    def _acknowledge(self, packet_id: int, reason: int) -> None:
        self._send(self.puback_bytes(packet_id, reason))

    def puback_bytes(self, packet_id: int, reason: int) -> bytes:
        """The PUBACK for a message (3.1.1 has no reason code: the client is acked plainly)."""
        return b"\x40\x02" + packet_id.to_bytes(2, "big")

    def _received(self, packet_id: int, reason: int) -> None:
        self._qos2[packet_id] = True
        self._send(mqtt311.pubrec(packet_id))

    def _released(self, packet_id: int) -> None:
        # PUBCOMP once the PUBREC is out; a PUBREL before it (a client that did not wait)
        # is answered when the message is durable and the client sends PUBREL again.
        if self._qos2.get(packet_id, True):
            self._qos2.pop(packet_id, None)
            self._send(mqtt311.pubcomp(packet_id))

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, requests: Sequence[tuple[str, int]]) -> list[int]:
        """Grant what the ACL allows (QoS at most 1); the answer per filter, 0x80 refused."""
        codes, granted = [], []
        for topic_filter, qos in requests:
            if valid_filter(topic_filter) and self.hooks.may_subscribe(
                self.principal, topic_filter
            ):
                self.session.subscriptions[topic_filter] = min(qos, 1)
                codes.append(min(qos, 1))
                granted.append((topic_filter, min(qos, 1)))
            else:
                codes.append(mqtt311.SUBSCRIPTION_FAILURE)
        if granted:
            self.follow_up(partial(self._after_subscribe, granted))
        return codes

    def unsubscribe(self, topic_filters: Sequence[str]) -> None:
        """Forget these filters."""
        for topic_filter in topic_filters:
            self.session.subscriptions.pop(topic_filter, None)

    def follow_up(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` after the connection's earlier follow-ups, in order."""
        previous = self._follow_up
        self._follow_up = asyncio.get_running_loop().create_task(self._after(previous, step))

    @staticmethod
    async def _after(
        previous: asyncio.Task[None] | None, step: Callable[[], Awaitable[None]]
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await step()
        except Exception:
            log.exception("mqtt_follow_up_failed")

    async def _after_subscribe(self, granted: Sequence[tuple[str, int]]) -> None:
        # Only what the application returns for this client's own new subscription.
        for topic_filter, qos in granted:
            for topic, payload in await self.hooks.retained(self.principal, topic_filter):
                if topic_matches(topic, topic_filter):
                    self.send(Outgoing(topic, payload, qos, True))
            await self.broker.subscribed(self.principal, topic_filter)

    def stop(self) -> None:
        """The connection has ended: cancel what still runs for it."""
        if self._follow_up is not None:
            self._follow_up.cancel()
        for task in self._tasks:
            task.cancel()

    # -- outbound -----------------------------------------------------------------------

    def send(self, message: Outgoing) -> None:
        """Send a message; QoS 1 stays in the session until the client acknowledges it."""
        if message.qos:
            packet_id = self.session.next_packet_id()
            self.session.inflight[packet_id] = message
            self.publish(message, packet_id, dup=False)
        else:
            self.publish(message, None, dup=False)

    def resend(self) -> None:
        """Send again (DUP) what a persistent session holds unacknowledged, in order."""
        for packet_id, message in list(self.session.inflight.items()):
            self.publish(message, packet_id, dup=True)

    def publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None:
        """Write one PUBLISH."""
        self._send(
            mqtt311.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                packet_id=packet_id,
                retain=message.retain,
                dup=dup,
            )
        )
