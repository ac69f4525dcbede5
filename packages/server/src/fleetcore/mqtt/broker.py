"""The embedded MQTT broker (3.1.1 and 5.0): who is connected, their sessions, and the
application's hooks deciding for it.

Our own core, on asyncio: listeners (fleetcore.mqtt.listeners), framing and the CONNECT
phase (connection.py), the packets of each version (handler.py, handler5.py, on the pure
codecs mqtt311.py and mqtt5.py), sessions (session.py). It replaced amqtt 0.12.1, whose
defects each have a test in tests/test_mqtt_broker.py that still runs against the
unmodified amqtt, as a strict xfail. What it guarantees:

1. Inbound messages are handed to the application synchronously, in order, as they are
   read, and acknowledged only when the application says they are durable; nothing sits
   in a per-session queue that a disconnect clears.
2. A CONNECT is authenticated before any existing session is looked at, so a wrong password
   never disturbs the genuine client.
3. Retained messages go to a client only for its own new subscription, and only what the
   application returns for that client.
4. Outgoing QoS 1 messages stay in the session until acknowledged and are resent when a
   persistent session reconnects; a take-over closes the old connection and waits for it.
5. ACL and the application hook run before the PUBACK; the hook is synchronous and bounded
   (admission is the pipeline's), and acknowledgements are ordered per connection.
6. Sessions are keyed by the authenticated principal and the client id together, so one
   device's credentials can never take over another device's client id.
7. What a client may cost is bounded (fleetcore.mqtt.limits): connections in all, still in
   their CONNECT phase and provisional; the CONNECT's deadline and size (checked from the
   fixed header, before the body is read), every later packet's size, the keep-alive.

Messages published by devices are never fanned out to other clients: the application is
the only consumer, and it sends to a device with `deliver`, which reaches that device's
own sessions alone. Retained messages come from the platform only (`BrokerHooks.retained`).

Each connection's life is one task (`_serve`: the CONNECT, then waiting for the end); its
packets are handled in the transport's callbacks, without a task per packet. Sessions and
connections are touched on the event loop's thread only; a lock per session key orders
CONNECTs with the same key (take-over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fleetcore.mqtt import metrics, mqtt5
from fleetcore.mqtt.connect import (
    ConnectRequest,
    Refusal,
    random_client_id,
    read_connect,
    refusal_connack,
)
from fleetcore.mqtt.connection import Connection, NotConnect, TooLarge
from fleetcore.mqtt.handler import (
    ADMINISTRATIVE_ACTION,
    SERVER_SHUTTING_DOWN,
    SESSION_TAKEN_OVER,
    Handler,
)
from fleetcore.mqtt.handler5 import Mqtt5Handler, connack_properties
from fleetcore.mqtt.hooks import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    BrokerHooks,
    ClientInfo,
    Inbound,
    Principal,
    Provisional,
    Refused,
)
from fleetcore.mqtt.limits import ConnectionGate, MqttLimits
from fleetcore.mqtt.listeners import ListenerConfig, Listeners
from fleetcore.mqtt.mqtt311 import connack
from fleetcore.mqtt.session import MAX_OFFLINE_MESSAGES, Outgoing, Session
from fleetcore_protocol.topics import topic_matches

log = logging.getLogger(__name__)

END_WAIT_S = 5.0  # longest wait for a connection being closed (take-over, drop, shutdown)

__all__ = [
    "BAD_USERNAME_PASSWORD",
    "IDENTIFIER_REJECTED",
    "MAX_OFFLINE_MESSAGES",
    "NOT_AUTHORIZED",
    "SERVER_UNAVAILABLE",
    "BrokerHooks",
    "ClientInfo",
    "FleetBroker",
    "Inbound",
    "MqttLimits",
    "Principal",
    "Refused",
    "topic_matches",
]


class _KeyLocks:
    """One lock per session key, alive while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class FleetBroker:
    """The broker, with the application deciding who connects, what they may do and where
    their messages go (see the module docstring)."""

    def __init__(
        self, config: dict[str, Any], hooks: BrokerHooks, limits: MqttLimits | None = None
    ) -> None:
        self.hooks = hooks
        self.gate = ConnectionGate(limits or MqttLimits())
        self.serving = False
        self._configs = [
            ListenerConfig.parse(name, listener)
            for name, listener in (config.get("listeners") or {}).items()
        ]
        expiry = config.get("session_expiry_interval")
        self._session_expiry_s: float | None = None if expiry is None else float(expiry)
        self._listeners = Listeners(self.gate, self._serve)
        self._sessions: dict[str, Session] = {}
        self._handlers: dict[str, Handler] = {}  # session key -> its live connection
        self._keys_of: defaultdict[str, set[str]] = defaultdict(set)
        self._expiries: dict[str, asyncio.TimerHandle] = {}
        self._locks = _KeyLocks()
        self._connections: set[Connection] = set()
        self._serving: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Future[Any]] = set()

    # -- who is connected -------------------------------------------------------------

    def connected_keys(self) -> set[str]:
        """Principal keys with at least one live connection."""
        return {h.principal.key for h in self._handlers.values()}

    def principals(self) -> list[Principal]:
        """The principal of every live connection."""
        return [h.principal for h in self._handlers.values()]

    # -- starting and stopping ----------------------------------------------------------

    async def start(self) -> None:
        """Listen on every configured listener."""
        await self._listeners.start(self._configs)
        self.serving = True

    async def shutdown(self) -> None:
        """Stop listening, close every connection and wait for them to end."""
        self.serving = False
        self._listeners.close()
        for handler in list(self._handlers.values()):
            handler.close(SERVER_SHUTTING_DOWN)
        for connection in list(self._connections):
            connection.close()
        if self._serving:
            await asyncio.wait(self._serving, timeout=END_WAIT_S)
        await self._listeners.wait_closed()
        for timer in self._expiries.values():
            timer.cancel()
        for pending in self._background:
            pending.cancel()

    # -- a connection's life ------------------------------------------------------------

    async def _serve(
        self, connection: Connection, start_tls: Callable[[], Awaitable[None]] | None
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        self._connections.add(connection)
        try:
            request = await self._first_packet(connection, start_tls)
            handler = None if request is None else await self._establish(connection, request)
            if handler is not None:
                await self._run(handler)
        except Exception:
            log.exception("mqtt_connection_failed")
        finally:
            connection.close()
            self._connections.discard(connection)
            self.gate.release(connection.admission)
            if task is not None:
                self._serving.discard(task)

    async def _first_packet(
        self, connection: Connection, start_tls: Callable[[], Awaitable[None]] | None
    ) -> ConnectRequest | None:
        """The CONNECT, within the deadline (TLS handshake included); None if there is none
        to serve (refusals are answered here)."""
        remote = connection.remote
        try:
            async with asyncio.timeout(self.gate.limits.connect_timeout_s):
                if start_tls is not None:
                    try:
                        await start_tls()
                    except BaseException:
                        connection.lost()  # a failed handshake never tells the connection
                        raise
                body = await connection.first
        except TimeoutError:
            metrics.CONNECTIONS_REFUSED.labels("connect_timeout").inc()
            log.debug("mqtt_connect_timeout", extra={"remote": remote})
            return None
        except TooLarge:
            metrics.CONNECTIONS_REFUSED.labels("connect_too_large").inc()
            log.info("mqtt_connect_too_large", extra={"remote": remote})
            return None
        except NotConnect:
            log.info("mqtt_not_a_connect", extra={"remote": remote})
            return None
        except (ConnectionError, OSError) as exc:
            log.info("mqtt_connection_ended", extra={"reason": repr(exc)})
            return None
        request = read_connect(body, remote)
        if request is None:
            log.info("mqtt_not_a_connect", extra={"remote": remote})
        elif isinstance(request, Refusal):
            connection.send(refusal_connack(request.protocol, request.reason))
            return None
        return request

    async def _establish(self, connection: Connection, request: ConnectRequest) -> Handler | None:
        """Authenticate, then take the session over; the handler, or None if refused."""
        client = request.client
        try:
            principal = await self.hooks.authenticate(client)
        except Refused as exc:
            log.info("mqtt_refused", extra={"remote": connection.remote, "reason": exc.reason})
            connection.send(refusal_connack(client.protocol, exc.code))
            return None
        if connection.closing:
            return None  # gone while it was authenticated: nothing is established
        provisional = isinstance(principal, Provisional)
        if not self.gate.establish(connection.admission, provisional=provisional):
            connection.send(refusal_connack(client.protocol, mqtt5.SERVER_BUSY))
            return None
        client_id = client.client_id or random_client_id()
        key = f"{principal.key}|{client_id}"
        async with self._locks.hold(key):
            old = self._handlers.get(key)
            if old is not None:
                await self._take_over(old)
            if connection.closing:
                if old is not None:  # no successor will report the old connection's end
                    await self._disconnected(old.principal, abnormal=False)
                return None
            handler = self._attach(connection, request, principal, key, client_id)
            handler.replaces = old
            return handler

    def _attach(
        self,
        connection: Connection,
        request: ConnectRequest,
        principal: Principal,
        key: str,
        client_id: str,
    ) -> Handler:
        """Bind the connection to its session (new, or kept) and accept it (CONNACK)."""
        client = request.client
        session = self._sessions.get(key)
        if session is not None and (client.clean_session or session.clean):
            self._forget(key)
            session = None
        present = session is not None
        if session is None:
            session = Session(key, principal.key)
            self._sessions[key] = session
            self._keys_of[principal.key].add(key)
        timer = self._expiries.pop(key, None)
        if timer is not None:
            timer.cancel()
        # Whether the session ends with the connection: 3.1.1's clean flag, or an MQTT 5
        # session expiry interval of 0.
        expiry = request.session_expiry
        session.clean = client.clean_session if expiry is None else expiry == 0
        session.expiry_s = None if expiry is None or expiry == 0xFFFFFFFF else float(expiry)
        session.will = request.will
        limits = self.gate.limits
        keep_alive = limits.keep_alive(request.keep_alive)
        handler: Handler
        if client.protocol == mqtt5.PROTOCOL_LEVEL:
            handler = Mqtt5Handler(self, connection, session, principal, client)
            handler.max_packet_size = request.max_packet_size
            properties = connack_properties(
                limits.max_packet_bytes,
                keep_alive if keep_alive != request.keep_alive else None,
                client_id if request.random_id else None,
            )
            connection.send(mqtt5.connack(present, mqtt5.SUCCESS, properties))
        else:
            handler = Handler(self, connection, session, principal, client)
            connection.send(connack(present, 0))  # 3.1.1 cannot announce its keep-alive
        self._handlers[key] = handler
        connection.open(handler, keep_alive)
        handler.resend()  # what the session holds unacknowledged, then what waited offline
        while session.offline:
            handler.send(session.offline.popleft())
        return handler

    async def _run(self, handler: Handler) -> None:
        """The connection's life once accepted: until it ends (or its lifetime does)."""
        connection = handler.connection
        principal = handler.principal
        try:
            await self.hooks.connected(principal, handler.client)
            if handler.replaces is not None:
                # The taken-over connection's end, reported only now that its successor is
                # counted: a device's count of connections never passes through zero on a
                # take-over (no offline/online flap), and every `connected` gets its
                # `disconnected`.
                await self._disconnected(handler.replaces.principal, abnormal=False)
                handler.replaces = None
            connection.release()  # its packets are read from now on
            for topic_filter in list(handler.session.subscriptions):
                # A resumed session keeps its subscriptions: as good as new ones.
                await self.subscribed(principal, topic_filter)
            if isinstance(principal, Provisional):
                try:
                    await asyncio.wait_for(asyncio.shield(connection.ended), principal.lifetime_s)
                except TimeoutError:  # a provisional session's time is up
                    metrics.CLOSED.labels("lifetime").inc()
                    handler.close(mqtt5.MAXIMUM_CONNECT_TIME)
            await connection.ended
        finally:
            await self._end(handler)

    async def _end(self, handler: Handler) -> None:
        handler.stop()
        session = handler.session
        key = session.key
        try:
            if self._handlers.get(key) is handler:
                del self._handlers[key]
            if handler.taken_over:
                return  # the new connection owns the session now
            abnormal = not handler.connection.normal_end
            will = session.will
            session.will = None
            if abnormal and will is not None:
                verdict = self.hooks.accept(
                    handler.principal,
                    Inbound(will.topic, will.payload, will.qos, will.retain, will=True),
                )
                if verdict is not None and not isinstance(verdict, int):
                    self._keep(asyncio.ensure_future(verdict))
            if self._sessions.get(key) is session:
                if session.clean:
                    self._forget(key)
                else:
                    self._expire_later(session)
            await self._disconnected(handler.principal, abnormal=abnormal)
        finally:
            handler.finished.set()

    async def _disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        try:
            await self.hooks.disconnected(principal, abnormal=abnormal)
        except Exception:
            log.exception("mqtt_disconnect_hook_failed")

    async def _take_over(self, old: Handler) -> None:
        """Close the connection a new CONNECT replaces and wait until it is gone."""
        old.taken_over = True
        old.close(SESSION_TAKEN_OVER)
        await self._wait_finished(old)

    @staticmethod
    async def _wait_finished(handler: Handler) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handler.finished.wait(), END_WAIT_S)

    def _keep(self, future: asyncio.Future[Any]) -> None:
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    # -- sessions -----------------------------------------------------------------------

    def _expire_later(self, session: Session) -> None:
        """A persistent session without a connection is forgotten after its expiry: the
        client's (MQTT 5), at most the configured one."""
        delays = [d for d in (session.expiry_s, self._session_expiry_s) if d is not None]
        if not delays:
            return
        loop = asyncio.get_running_loop()
        self._expiries[session.key] = loop.call_later(min(delays), self._expire, session)

    def _expire(self, session: Session) -> None:
        self._expiries.pop(session.key, None)
        if self._sessions.get(session.key) is session and session.key not in self._handlers:
            self._forget(session.key)

    def _forget(self, key: str) -> None:
        """Drop a session: its subscriptions, queued and in-flight messages."""
        session = self._sessions.pop(key, None)
        timer = self._expiries.pop(key, None)
        if timer is not None:
            timer.cancel()
        if session is None:
            return
        keys = self._keys_of.get(session.principal_key)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[session.principal_key]
        session.clear()

    async def drop(self, principal_key: str) -> int:
        """Disconnect every connection of a principal and forget its sessions."""
        keys = list(self._keys_of.get(principal_key, ()))
        for key in keys:
            handler = self._handlers.get(key)
            if handler is not None:
                handler.close(ADMINISTRATIVE_ACTION)
                await self._wait_finished(handler)
            self._forget(key)
        return len(keys)

    async def subscribed(self, principal: Principal, topic_filter: str) -> None:
        """Tell the application of a granted subscription (a failing hook is logged)."""
        try:
            await self.hooks.subscribed(principal, topic_filter)
        except Exception:
            log.exception("mqtt_subscribed_hook_failed")

    # -- sending to devices -------------------------------------------------------------

    def deliver(
        self,
        principal_key: str,
        topic: str,
        payload: bytes,
        qos: int = 1,
        *,
        retain: bool = False,
    ) -> int:
        """Send to this principal's sessions subscribed to `topic`, and to no one else.

        Connected sessions get it now; a disconnected persistent session keeps QoS 1
        messages for its reconnect. Returns how many sessions it was sent or queued for.
        """
        count = 0
        for key in list(self._keys_of.get(principal_key, ())):
            session = self._sessions[key]
            granted = session.granted(topic)
            if granted is None:
                continue
            message = Outgoing(topic, bytes(payload), min(qos, granted), retain)
            handler = self._handlers.get(key)
            if handler is not None:
                handler.send(message)
                count += 1
            elif message.qos and not session.clean:
                if not session.queue(message):
                    log.warning("mqtt_offline_queue_full", extra={"session": key})
                count += 1
        return count
