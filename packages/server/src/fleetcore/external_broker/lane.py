"""The ordered lane: one ingest process at a time takes the device messages whose order matters.

Why: a broker hands the messages of a shared subscription to its members in turn (Mosquitto
2.0 round robin; EMQX by default too), so two messages of one device usually go to two
processes, each storing on its own. For telemetry that is the point (readings carry their
times; storage de-duplicates). For the ORDERED channels (fleetcore_protocol.topics) it is
wrong: a device that writes an attribute and then asks for it could be answered by the other
process before the write is stored, and two writes of one attribute could be stored in the
wrong order. Within a process the device's lane in the message layer keeps its order
(fleetcore.device_messages.inbound); across processes nothing did.

How:
- Every ingest process still gets the ORDERED topics through its shared subscriptions, and
  acknowledges them unhandled (ExternalTransport with `ordered_lane=True`).
- One connection of the whole group subscribes to them without `$share`, under the fixed
  client id `fleetcore-lane-<group>` and a persistent session (`LaneConsumer`): the broker
  gives it every such message in the order each device sent them, and queues them while no
  process holds the lane (a new holder resumes the session). Its subscriptions are kept in
  the session; retained messages are not sent to it (the platform's own would flood it).
- Which process: the one holding a PostgreSQL advisory lock (MQTT_LANE_CLASS and the share
  group's CRC-32) on a connection kept open for it (`PostgresLaneLock`). A process that dies
  frees it at once; every ingest process tries for it every CHECK_S, and the holder checks
  that connection as often: a holder that lost it closes its lane connection without ending
  the session. On SQLite the process is alone, and holds the lane from its start
  (`SoleLaneLock`).
- Two holders for a moment (one cut off from PostgreSQL but not yet checked): the broker lets
  one connection hold a client id, and a new one takes the session over. The lane's
  connection never reconnects by itself: when it ends (a take-over, a broker restart), the
  process connects again at its next check only if it still holds the lock. So the lane
  ends with the lock's holder, within CHECK_S. Messages unacknowledged on an ended
  connection are delivered again on the next (acknowledgements are per connection).

Costs: ordered messages go through the broker twice (shared, acknowledged at once, and the
lane), and one process handles all of them. They are a device's attribute and status traffic,
far rarer than telemetry.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import paho.mqtt.client as paho
import structlog
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleetcore.advisory_locks import MQTT_LANE_CLASS
from fleetcore.db import Database, create_engine
from fleetcore.device_messages.acl import PLATFORM_CLIENT_ID_PREFIX
from fleetcore.external_broker import metrics
from fleetcore.external_broker.transport import RETRYABLE, ExternalTransport
from fleetcore.job_leases import lock_key
from fleetcore.ops.readiness import NotReady
from fleetcore_protocol import topics

log = structlog.get_logger(__name__)

CHECK_S = 2.0  # how often a process tries for the lane, and its holder checks it still holds it


def lane_client_id(group: str) -> str:
    """The lane's client id: one per share group, whichever process holds it."""
    return f"{PLATFORM_CLIENT_ID_PREFIX}lane-{group}"


class LaneLock(Protocol):
    """Who holds the lane. `acquire` and `held` answer False on a database error; `release`
    lets go of it (it may be acquired again), `close` at the process's stop."""

    async def acquire(self) -> bool: ...

    async def held(self) -> bool: ...

    async def release(self) -> None: ...

    async def close(self) -> None: ...


class SoleLaneLock:
    """SQLite: one process serves the database, so it holds the lane."""

    async def acquire(self) -> bool:
        return True

    async def held(self) -> bool:
        return True

    async def release(self) -> None:
        return None

    async def close(self) -> None:
        return None


class PostgresLaneLock:
    """A session advisory lock on a connection of its own, held while the lane is."""

    def __init__(self, database: Database, group: str) -> None:
        self.key = lock_key(group)
        # Its own engine: the held connection must never be one a request or a write waits for.
        self.engine: AsyncEngine = create_engine(database.engine.url, pool_size=1)
        self._connection: AsyncConnection | None = None

    async def acquire(self) -> bool:
        try:
            # Kept before asking: a stop that cancels this still closes it (release).
            self._connection = connection = await self.engine.connect()
            locked = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:c, :k)"), {"c": MQTT_LANE_CLASS, "k": self.key}
            )
            await connection.commit()
        except RETRYABLE:
            await self.release()
            return False
        if not locked:  # back to the pool (its session holds nothing), for the next try
            self._connection = None
            with contextlib.suppress(*RETRYABLE):
                await connection.close()
        return bool(locked)

    async def held(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            await connection.execute(text("SELECT 1"))
            await connection.commit()
        except RETRYABLE:  # the connection, and with it the lock, is gone
            self._connection = None
            await _end_quietly(connection)
            return False
        return True

    async def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await _end_quietly(connection)

    async def close(self) -> None:
        await self.release()
        await self.engine.dispose()


async def _end_quietly(connection: AsyncConnection) -> None:
    """End the database session (which frees its advisory locks): invalidated, not given
    back to the pool, where the session and its lock would live on."""
    with contextlib.suppress(*RETRYABLE):
        await connection.invalidate()
        await connection.close()


def lane_lock(database: Database, group: str) -> LaneLock:
    """The lock of this share group's processes on this database."""
    if database.dialect == "postgresql":
        return PostgresLaneLock(database, group)
    return SoleLaneLock()


class LaneConsumer(ExternalTransport):
    """The lane's connection: the transport's ingest path on the ORDERED filters, without
    `$share`, under the group's fixed client id. It shares what the process knows of its
    devices (directory, sessions, family, last heard) with the process's transport, which
    sends everything."""

    connected_gauge = metrics.LANE_CONNECTED
    reconnects = False  # the holder decides (module docstring)

    def __init__(self, transport: ExternalTransport) -> None:
        # `of`: the transport's device sessions, so one device lane in this process, also
        # across the lane's connections (a write still in flight from an ended connection
        # stays ahead of what is delivered again).
        super().__init__(transport.settings, transport.messages, consume=True, of=transport)
        self.client_id = lane_client_id(transport.group)
        self.ended = False  # its connection ended: replaced at the next check if still held

    def filters(self) -> list[str]:
        return topics.ordered_filters()

    def subscribe_options(self) -> SubscribeOptions:
        # The platform's retained publishes on devices' attribute topics are not for it.
        return SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)

    async def start(self) -> None:
        """Connect and subscribe; the process's transport attached the message layer."""
        await self._open()

    async def stop(self) -> None:
        """Settle what was received (acknowledged once durable), then disconnect keeping the
        session and its subscriptions: the broker queues the lane for the next holder."""
        self._stopping = True
        await self._drain(leave=False)
        await self._close(None)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, p: Any
    ) -> None:
        super()._on_disconnect(client, userdata, flags, reason, p)
        if not self._stopping:
            self.ended = True


class OrderedLane:
    """The component that holds the lane when this process can, and runs its consumer while
    it does (see the module docstring)."""

    name = "mqtt.ordered-lane"

    def __init__(self, transport: ExternalTransport, lock: LaneLock) -> None:
        self.transport = transport
        self.lock = lock
        self.consumer: LaneConsumer | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._checked = asyncio.Event()  # one round of trying or checking has ended
        self._closing = False

    @property
    def holds(self) -> bool:
        """This process consumes the lane now."""
        return self.consumer is not None

    async def start(self) -> None:
        self._closing = False
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def stop(self) -> None:
        self._closing = True
        if self._keeper is not None:
            # Python 3.11's asyncio.wait_for (here, and in the database driver) can swallow a
            # cancellation that meets its own timeout (seen: a stop that never ended); the
            # loop also ends at its next turn, seeing _closing.
            self._keeper.cancel()
            await asyncio.wait([self._keeper])
        await self._let_go()
        await self.lock.close()

    async def ready(self) -> None:
        """Not ready while this process holds the lane and the broker refused its filters
        (the ordered messages would be acknowledged by the shared members and lost)."""
        consumer = self.consumer
        if consumer is not None and consumer.refused:
            raise NotReady(
                "the broker refused the ordered lane's subscriptions "
                f"({', '.join(consumer.filters())}): allow them to the platform client"
            )

    async def wait_checked(self) -> None:
        """Wait for the end of a round of trying for (or checking) the lane (tests)."""
        self._checked.clear()
        await self._checked.wait()

    async def _keep(self) -> None:
        while not self._closing:
            try:
                await self._round()
            except Exception:  # a defect: logged, and the next round tries again
                log.exception("mqtt_lane_round_failed")
            self._checked.set()
            await asyncio.sleep(CHECK_S)

    async def _round(self) -> None:
        consumer = self.consumer
        if consumer is not None and (consumer.ended or not await self.lock.held()):
            await self._let_go()  # its connection ended, or the lock is lost
        if self.consumer is None and (await self.lock.held() or await self.lock.acquire()):
            await self._take()

    async def _take(self) -> None:
        # Known before it connects: a stop meanwhile (cancelling this) still closes it.
        consumer = self.consumer = LaneConsumer(self.transport)
        await consumer.start()
        metrics.LANE_HELD.set(1)
        log.info("mqtt_lane_held", client_id=consumer.client_id)

    async def _let_go(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        metrics.LANE_HELD.set(0)
        await consumer.stop()
        log.info("mqtt_lane_released", client_id=consumer.client_id)
