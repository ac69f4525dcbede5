"""Getting commands to devices and their answers back; expiry; who can be reached.

`CommandService` is a lifespan component (app.state.commands). It sends through the
device-message layer's outbox (over MQTT: the native topic `devices/{id}/commands`, else
ThingsBoard `v1/devices/me/rpc/request/{rpc_id}`) or hands commands to HTTP long-pollers,
takes results from the device-message layer and the HTTP routes, and expires what runs out
of time.

- Sent = handed to a connected MQTT session of the device (the transport does not report
  the device's PUBACK); over HTTP, fetching a command makes it sent and delivered at once.
  A result implies delivery: it stamps `delivered_at` if nothing did before.
- Per device, sending and HTTP claiming hold a lock (`DeviceLocks`: in-process, or Redis
  across processes): a command goes out once, and a result that overtakes the commit of
  "sent" waits for it. The conditional UPDATEs (transitions.py) stay the final arbiter of
  every state change: the lock keeps two processes from *sending* the same command (which
  the database cannot undo), the UPDATE keeps two from *recording* it even when the lock
  could not be had (Redis down, a lock expired under a stalled holder).
- Expiry runs every second but queries only when the earliest known deadline has passed
  (known = found at start, or created by this process since). Beside other processes
  (`shared`: commands are created on api processes, expired by a worker) it cannot know
  theirs, so each run asks the database for the earliest deadline first (one indexed query).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.commands.models import OPEN, CommandStatus, DeviceCommand
from fleetcore.commands.transitions import live_message, move
from fleetcore.db import Database, utcnow
from fleetcore.device_messages.ports import DeviceOutbox
from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore_protocol import topics
from fleetcore_protocol.jsonvalue import unstorable
from fleetcore_protocol.messages import Command, Family
from fleetcore_protocol.topics import Channel, topic_matches

log = structlog.get_logger(__name__)

BATCH = 100  # commands sent or claimed per round
MAX_RPC_ID = 2**31 - 1
EXPIRY_INTERVAL_S = 1.0
RETRY_AFTER_FAILURE = timedelta(seconds=30)  # when the database could not be asked
# MQTT 5 reason codes for refused results (the device-message layer answers with them).
NOT_AUTHORIZED = 0x87
UNSPECIFIED_ERROR = 0x80
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
# A result answers a command; bulk data goes as telemetry. Stored results stay small.
MAX_RESULT_BYTES = 64 * 1024
# How long a result for a command still queued waits for its sender's "sent" (another
# process's commit; a device never sent the command is refused after it).
SENDER_GRACE_S = 2.0
PAYLOAD_FORMAT_INVALID = 0x99


class Presence(Protocol):
    """Who is online (app.state.presence, when the device status service provides it)."""

    def is_online(self, device_id: uuid.UUID) -> bool:
        """Whether the device is connected now."""
        ...


class DeviceLocks(Protocol):
    """Mutual exclusion per device around sending and claiming its commands.

    `hold(device)` is an async context manager: while it is held no other holder of the
    same device's lock runs, in this process or (shared implementations) any other. A
    shared implementation that cannot reach its store, or waits past its bound, enters
    anyway after logging it: a delivery may then race another process's, and the
    conditional UPDATEs decide which one records it.
    """

    def hold(self, device_id: uuid.UUID) -> AbstractAsyncContextManager[object]: ...


class LocalLocks:
    """One asyncio.Lock per device, in this process (forgotten when nobody holds it)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[uuid.UUID, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def hold(self, device_id: uuid.UUID) -> asyncio.Lock:
        """The device's lock (use with `async with`)."""
        lock = self._locks.get(device_id)
        if lock is None:
            lock = self._locks[device_id] = asyncio.Lock()
        return lock


class DeviceRef(Protocol):
    """A device as the device-facing paths know it (ORM row or the auth cache's copy)."""

    @property
    def id(self) -> uuid.UUID:
        """The device's id."""

    @property
    def organization_id(self) -> uuid.UUID:
        """The device's organization."""


class Refusal(StrEnum):
    """Why a device's result was not taken."""

    UNKNOWN = "unknown"  # no such command
    NOT_YOURS = "not_yours"  # another device's command
    NOT_OPEN = "not_open"  # never sent, or already finished
    TOO_LARGE = "too_large"  # a result past MAX_RESULT_BYTES
    UNSTORABLE = "unstorable"  # nested too deep, an integer past 64 bits, a lone surrogate


_REFUSAL_CODES = {
    Refusal.UNKNOWN: UNSPECIFIED_ERROR,
    Refusal.NOT_YOURS: NOT_AUTHORIZED,
    Refusal.NOT_OPEN: UNSPECIFIED_ERROR,
    Refusal.TOO_LARGE: IMPLEMENTATION_SPECIFIC_ERROR,
    Refusal.UNSTORABLE: PAYLOAD_FORMAT_INVALID,
}


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def is_commands_filter(device_id: uuid.UUID, topic_filter: str) -> bool:
    """Whether a subscription receives the device's commands (native or ThingsBoard RPC)."""
    native = topics.native(str(device_id), Channel.COMMANDS)
    return topic_matches(native, topic_filter) or topic_matches(
        f"{topics.TB_RPC_REQUEST}1", topic_filter
    )


class CommandService:
    """Delivery, results and expiry of device commands (a lifespan component)."""

    name = "commands"

    def __init__(
        self,
        database: Database,
        hub: LiveHub,
        *,
        presence: Callable[[], Presence | None] = lambda: None,
        outbox: DeviceOutbox | None = None,
        shared: bool = False,
        locks: DeviceLocks | None = None,
    ) -> None:
        self.database = database
        self.hub = hub
        self.shared = shared
        self.presence = presence
        self.outbox = outbox
        self.locks: DeviceLocks = locks or LocalLocks()
        self._pollers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._next_deadline: datetime | None = None
        self._noted: datetime | None = None  # deadlines noted while an expiry run is on
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Told the commands just sent (committed as sent or delivered): usage metering.
        self.on_sent: Callable[[Sequence[DeviceCommand]], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the earliest deadline of open commands (they may predate this process)."""
        self._stopping = False
        try:
            async with self.database.session() as session:
                self._next_deadline = await self._earliest_deadline(session)
        except (SQLAlchemyError, OSError) as exc:
            # Not ready (unreachable, schema behind): /ready says so; expiry looks again later.
            log.warning("commands_start_lookup_failed", error=str(exc)[:300])
            self._next_deadline = utcnow() + RETRY_AFTER_FAILURE

    async def stop(self) -> None:
        """Answer waiting long-polls now (with nothing); let deliveries in flight finish."""
        self._stopping = True
        for waiters in self._pollers.values():
            for wake in waiters:
                wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    # -- who can be reached ------------------------------------------------------------

    def is_online(self, device_id: uuid.UUID) -> bool:
        """Connected over MQTT (presence, or the outbox) or waiting in a long-poll."""
        if self._pollers.get(device_id):
            return True
        presence = self.presence()
        if presence is not None:
            return bool(presence.is_online(device_id))
        return self.outbox is not None and str(device_id) in self.outbox.online()

    def _lock(self, device_id: uuid.UUID) -> AbstractAsyncContextManager[object]:
        return self.locks.hold(device_id)

    # -- state changes -----------------------------------------------------------------

    def publish(self, commands: Sequence[DeviceCommand]) -> None:
        """Push each command's new state to the organization's "commands" channel."""
        for command in commands:
            if self.hub.wanted(command.organization_id, "commands"):
                self.hub.publish(
                    LiveEvent(
                        command.organization_id,
                        "commands",
                        command.device_id,
                        live_message(command),
                    )
                )

    def note_deadline(self, expires_at: datetime) -> None:
        """A command was committed that expires at this time (call after the commit)."""
        self._next_deadline = _earlier(self._next_deadline, expires_at)
        self._noted = _earlier(self._noted, expires_at)

    # -- sending -----------------------------------------------------------------------

    def _send_mqtt(self, command: DeviceCommand) -> str | None:
        """Hand the command to the device's MQTT sessions; returns the channel used."""
        if self.outbox is None:
            return None
        message = Command(str(command.id), command.method, command.params, command.rpc_id)
        family = self.outbox.send(str(command.device_id), message)
        if family is None:
            return None
        return "mqtt" if family is Family.NATIVE else "thingsboard"

    async def deliver_queued(self, device_id: uuid.UUID) -> None:
        """Send the device's queued commands over MQTT, oldest first; else wake its pollers."""
        async with self._lock(device_id):
            async with self.database.session() as session:
                queued = (
                    await session.scalars(
                        select(DeviceCommand)
                        .where(
                            DeviceCommand.device_id == device_id,
                            DeviceCommand.status == CommandStatus.QUEUED,
                        )
                        .order_by(DeviceCommand.created_at, DeviceCommand.id)
                        .limit(BATCH)
                    )
                ).all()
                await session.commit()
                sent: list[DeviceCommand] = []
                for command in queued:
                    channel = self._send_mqtt(command)
                    if channel is None:
                        break
                    sent += await move(
                        session,
                        DeviceCommand.id == command.id,
                        expected=(CommandStatus.QUEUED,),
                        to=CommandStatus.SENT,
                        channel=channel,
                    )
                if sent:
                    await session.commit()
                    self._sent(sent)
            self.publish(sent)
        if len(sent) < len(queued):
            self._wake(device_id)

    # -- the device listener (fleetcore.device_messages.ports.DeviceListener) -------------

    async def device_connected(self, device: Any) -> None:
        """Nothing to do: commands go out when the device subscribes to them."""

    async def device_disconnected(self, device: Any, *, abnormal: bool) -> None:
        """Nothing to do: what was sent waits for a result or its expiry."""

    async def device_subscribed(self, device: DeviceRef, topic_filter: str) -> None:
        """Send the queued commands when the device subscribes to its commands topic."""
        if is_commands_filter(device.id, topic_filter):
            # In the background: the broker handles the connection's next subscriptions only
            # after this returns, and a device may publish (and expect answers) meanwhile.
            task = asyncio.get_running_loop().create_task(self._deliver_quietly(device.id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver_quietly(self, device_id: uuid.UUID) -> None:
        try:
            await self.deliver_queued(device_id)
        except Exception:
            log.exception("commands_delivery_failed", device_id=str(device_id))

    # -- HTTP long-poll ----------------------------------------------------------------

    def _sent(self, commands: Sequence[DeviceCommand]) -> None:
        if self.on_sent is not None and commands:
            self.on_sent(commands)

    def _wake(self, device_id: uuid.UUID) -> None:
        for wake in self._pollers.get(device_id, ()):
            wake.set()

    async def poll(
        self, device: DeviceRef, *, timeout_s: float, limit: int, channel: str
    ) -> list[DeviceCommand]:
        """The device's queued commands, now delivered; waits up to timeout_s for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            wake = asyncio.Event()
            waiters = self._pollers.setdefault(device.id, set())
            waiters.add(wake)  # before looking: a command queued meanwhile wakes us
            try:
                claimed = await self._claim(device.id, limit=limit, channel=channel)
                remaining = deadline - loop.time()
                if claimed or remaining <= 0 or self._stopping:
                    return claimed
                try:
                    await asyncio.wait_for(wake.wait(), remaining)
                except TimeoutError:
                    return []
            finally:
                waiters.discard(wake)
                if not waiters and self._pollers.get(device.id) is waiters:
                    del self._pollers[device.id]

    async def _claim(
        self, device_id: uuid.UUID, *, limit: int, channel: str
    ) -> list[DeviceCommand]:
        async with self._lock(device_id), self.database.session() as session:
            oldest = (
                select(DeviceCommand.id)
                .where(
                    DeviceCommand.device_id == device_id,
                    DeviceCommand.status == CommandStatus.QUEUED,
                )
                .order_by(DeviceCommand.created_at, DeviceCommand.id)
                .limit(limit)
            )
            now = utcnow()
            claimed = await move(
                session,
                DeviceCommand.id.in_(oldest.scalar_subquery()),
                expected=(CommandStatus.QUEUED,),
                to=CommandStatus.DELIVERED,
                now=now,
                sent_at=now,
                channel=channel,
            )
            await session.commit()
        self._sent(claimed)
        claimed.sort(key=lambda c: (c.created_at, str(c.id)))
        self.publish(claimed)
        return claimed

    # -- results -----------------------------------------------------------------------

    async def record_result(
        self,
        device: DeviceRef,
        *,
        command_id: uuid.UUID | None = None,
        rpc_id: int | None = None,
        succeeded: bool,
        result: Any = None,
        error: str | None = None,
    ) -> DeviceCommand | Refusal:
        """A device's answer to a sent or delivered command (by id, or ThingsBoard rpc id)."""
        if result is not None:
            # Checked before encoding: orjson cannot write what unstorable() refuses.
            if unstorable({"result": result}):
                return Refusal.UNSTORABLE
            if len(orjson.dumps(result)) > MAX_RESULT_BYTES:
                return Refusal.TOO_LARGE
        which: ColumnElement[bool] = (
            DeviceCommand.id == command_id
            if command_id is not None
            else (DeviceCommand.device_id == device.id) & (DeviceCommand.rpc_id == rpc_id)
        )
        outcome = CommandStatus.SUCCEEDED if succeeded else CommandStatus.FAILED
        deadline = asyncio.get_running_loop().time() + SENDER_GRACE_S
        for attempt in itertools.count():
            async with self.database.session() as session:
                now = utcnow()
                moved = await move(
                    session,
                    which,
                    DeviceCommand.device_id == device.id,
                    expected=(CommandStatus.SENT, CommandStatus.DELIVERED),
                    to=outcome,
                    now=now,
                    result=result,
                    error=error[:1000] if error else None,
                    delivered_at=func.coalesce(DeviceCommand.delivered_at, now),
                )
                if moved:
                    command = moved[0]
                    _audit_device(session, command, "command.result", {"status": outcome.value})
                    await session.commit()
                    self.publish(moved)
                    return command
                current = (
                    await session.execute(
                        select(DeviceCommand.device_id, DeviceCommand.status).where(which)
                    )
                ).first()
                await session.commit()
            if current is None:
                return Refusal.UNKNOWN
            if current.device_id != device.id:
                return Refusal.NOT_YOURS
            if current.status not in OPEN:
                break  # finished already
            if asyncio.get_running_loop().time() > deadline:
                break
            if current.status != CommandStatus.QUEUED:
                continue  # "sent" committed between the move and this look: move again
            # Published, and "sent" not committed yet: the sender commits it just after
            # publishing. Here it holds the device's lock until then. Another process may be
            # the sender (an api process beside ingest workers, a broker between them, which
            # hands the device's answer to a worker at once): look again for a while.
            if attempt == 0:
                async with self._lock(device.id):
                    pass
                continue
            await asyncio.sleep(min(0.025 * 2**attempt, 1.0))
        return Refusal.NOT_OPEN

    async def mqtt_result(
        self, device: DeviceRef, command_id: str, body: dict[str, Any], thingsboard: bool
    ) -> int | None:
        """The device-message layer's command_results: None when taken, else a reason code."""
        if thingsboard:
            if int(command_id) > MAX_RPC_ID:
                return UNSPECIFIED_ERROR
            outcome = await self.record_result(
                device, rpc_id=int(command_id), succeeded=True, result=body
            )
        else:
            try:
                parsed = uuid.UUID(command_id)
            except ValueError:
                log.info("command_result_unknown", device_id=str(device.id), command=command_id)
                return UNSPECIFIED_ERROR
            status = body.get("status")
            if status not in ("succeeded", "failed"):
                log.info("command_result_malformed", device_id=str(device.id), command=command_id)
                return PAYLOAD_FORMAT_INVALID
            error = body.get("error")
            outcome = await self.record_result(
                device,
                command_id=parsed,
                succeeded=status == "succeeded",
                result=body.get("result"),
                error=None if error is None else str(error),
            )
        if isinstance(outcome, Refusal):
            log.info(
                "command_result_refused",
                device_id=str(device.id),
                command=command_id,
                reason=outcome.value,
            )
            return _REFUSAL_CODES[outcome]
        return None

    # -- expiry ------------------------------------------------------------------------

    async def _earliest_deadline(self, session: AsyncSession) -> datetime | None:
        earliest: datetime | None = await session.scalar(
            select(func.min(DeviceCommand.expires_at)).where(DeviceCommand.status.in_(OPEN))
        )
        await session.commit()
        return earliest

    async def expire_due(self) -> None:
        """Expire open commands whose time is up (a job, every second)."""
        now = utcnow()
        if self.shared:
            async with self.database.session() as session:
                self._next_deadline = await self._earliest_deadline(session)
        if self._next_deadline is None or self._next_deadline > now:
            return
        self._noted = None
        self._next_deadline = now + RETRY_AFTER_FAILURE  # unless the run below succeeds
        async with self.database.session() as session:
            due = (
                select(DeviceCommand.id)
                .where(DeviceCommand.status.in_(OPEN), DeviceCommand.expires_at <= now)
                .limit(500)
            )
            expired = await move(
                session,
                DeviceCommand.id.in_(due.scalar_subquery()),
                expected=OPEN,
                to=CommandStatus.EXPIRED,
                now=now,
                error="timed out",
            )
            for command in expired:
                audit.record(
                    session,
                    action="command.expire",
                    actor=None,
                    actor_type="system",
                    actor_id="commands.expiry",
                    organization_id=command.organization_id,
                    target_type="command",
                    target_id=command.id,
                    details={"device_id": str(command.device_id), "method": command.method},
                )
            await session.commit()
            earliest = await self._earliest_deadline(session)
        self._next_deadline = _earlier(earliest, self._noted)
        self.publish(expired)
        if expired:
            log.info("commands_expired", count=len(expired))


def _audit_device(
    session: AsyncSession, command: DeviceCommand, action: str, details: dict[str, Any]
) -> None:
    audit.record(
        session,
        action=action,
        actor=None,
        actor_type="device",
        actor_id=str(command.device_id),
        organization_id=command.organization_id,
        target_type="command",
        target_id=command.id,
        details={"device_id": str(command.device_id), "method": command.method, **details},
    )
