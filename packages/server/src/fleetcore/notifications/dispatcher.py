"""The dispatcher: sends due deliveries from the outbox, one sender per delivery at a time.

A sender claims due rows by setting a lease (status `delivering`, `lease_until`, its own
`lease_token`) in one short transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: FOR UPDATE
SKIP LOCKED), sends outside any transaction, then records the outcome only if it still holds
the lease. A sender that dies between sending and recording leaves a lease that expires, and
the delivery is sent again: at least once, with the same X-Fleetcore-Delivery id so that the
receiver can drop the copy. A delivery recorded as delivered is never claimed again.

Each claimed delivery is sent by a task of its own, within a deadline, and its slot is free
again as soon as it is recorded: no delivery waits for another's. Claims take only what the
free slots allow (slots.py: in all, per organization, per channel), so a tenant whose
receivers hang holds a few slots, not the dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import orjson
import structlog
from prometheus_client import Counter
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.config import Settings
from fleetcore.db import Database, utcnow
from fleetcore.notifications.crypto import SecretBox
from fleetcore.notifications.egress import webhook_client
from fleetcore.notifications.models import (
    ChannelType,
    DeliveryStatus,
    Notification,
    NotificationChannel,
    NotificationDelivery,
)
from fleetcore.notifications.senders import (
    Outcome,
    email_message,
    send_email,
    send_webhook,
    webhook_headers,
)
from fleetcore.notifications.slots import Slots

log = structlog.get_logger(__name__)

ATTEMPTS = Counter(
    "fleetcore_notification_attempts_total",
    "Notification delivery attempts by channel type and outcome.",
    ["type", "outcome"],  # delivered | retry | failed
)
_rng = random.SystemRandom()
_CHANNEL = NotificationChannel
_JOIN = NotificationChannel.id == NotificationDelivery.channel_id


def backoff_s(attempts: int, *, base_s: float, max_s: float) -> float:
    """The delay after `attempts` failed attempts: base doubling each time, capped, with
    jitter (between half and all of it) so that receivers coming back are not stampeded."""
    delay: float = min(max_s, base_s * 2.0 ** max(attempts - 1, 0))
    return delay / 2 + _rng.random() * delay / 2


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: uuid.UUID
    token: uuid.UUID
    organization_id: uuid.UUID
    channel_id: uuid.UUID
    event: str
    body: str
    attempts: int
    channel_type: str
    config: dict[str, Any]
    secret_encrypted: str | None


def _due(now: Any) -> Any:
    return or_(
        and_(
            NotificationDelivery.status == DeliveryStatus.PENDING,
            NotificationDelivery.next_attempt_at <= now,
        ),
        # A sender that held it died (or hung past its lease): someone must send it.
        and_(
            NotificationDelivery.status == DeliveryStatus.DELIVERING,
            NotificationDelivery.lease_until < now,
        ),
    )


class Dispatcher:
    """Sends the outbox; started and stopped by the lifespan, woken after alert commits."""

    name = "notifications"

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.settings = settings
        self.box = SecretBox(settings.secret_key.get_secret_value())
        self.slots = Slots(
            total=settings.notification_concurrency,
            per_org=settings.notification_concurrency_per_org,
            per_channel=settings.notification_concurrency_per_channel,
        )
        self.rounds = 0  # finished polling rounds (tests wait on it)
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Told each delivery recorded as delivered: (organization, channel type) (usage).
        self.on_delivered: Callable[[uuid.UUID, str], None] | None = None

    @property
    def enabled(self) -> bool:
        """False on a database that allows no background writes."""
        return self.database.background_writes_allowed

    def wake(self, *_: object) -> None:
        """Look at the outbox now (after a commit that staged deliveries)."""
        self._wake.set()

    async def start(self) -> None:
        """Start sending; what an earlier process left in the outbox goes first."""
        if not self.enabled:
            return
        self._stopping = False
        self._client = webhook_client(self.settings)
        self._task = asyncio.create_task(self._run(), name="notifications")

    async def stop(self) -> None:
        """Finish the sends in progress (bounded by their deadline) and record them; stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        await self._task
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            more = False
            try:
                more = await self.run_once()
            except Exception as error:  # database down: try again at the next poll
                log.warning("notifications_round_failed", error=str(error).splitlines()[0])
            self.rounds += 1
            if more or self._stopping:
                continue
            # Woken by a commit that staged deliveries, or by a send that freed its slot.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.notification_poll_s)
        if self._sending:
            await asyncio.gather(*self._sending)

    async def run_once(self) -> bool:
        """Claim the due deliveries the free slots allow and start sending each; True if
        more may be due for the slots still free."""
        if self.slots.free == 0:
            return False
        claimed, more = await self._claim()
        for delivery in claimed:
            self._start(delivery)
        return more and self.slots.free > 0

    def _start(self, claimed: _Claimed) -> None:
        self.slots.take(claimed.organization_id, claimed.channel_id)
        task = asyncio.create_task(self._deliver(claimed), name=f"notification-{claimed.id}")
        self._sending.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._sending.discard(task)
            self.slots.give_back(claimed.organization_id, claimed.channel_id)
            self._wake.set()

        task.add_done_callback(done)

    def _candidates(self, now: Any, limit: int) -> Any:
        query = (
            select(
                NotificationDelivery.id,
                NotificationDelivery.organization_id,
                NotificationDelivery.channel_id,
            )
            .join(_CHANNEL, _JOIN)
            .where(NotificationChannel.enabled.is_(True), _due(now))
        )
        if full_orgs := self.slots.full_orgs():
            query = query.where(NotificationDelivery.organization_id.not_in(full_orgs))
        if full_channels := self.slots.full_channels():
            query = query.where(NotificationDelivery.channel_id.not_in(full_channels))
        return query.order_by(NotificationDelivery.next_attempt_at).limit(limit)

    async def _claim(self) -> tuple[list[_Claimed], bool]:
        """Lease what fits the free slots; also whether more candidates were left over."""
        now = utcnow()
        token = uuid.uuid4()
        limit = self.slots.free
        query = self._candidates(now, limit)
        # Look first without taking SQLite's write lock: an idle poll must not make other
        # writers wait (or fail a transaction that read before it writes).
        async with self.database.session() as session:
            if (await session.execute(query.limit(1))).first() is None:
                return [], False
        async with self.database.session(write=True) as session:
            if self.database.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=NotificationDelivery)
            candidates = [tuple(row) for row in (await session.execute(query)).all()]
            ids = self.slots.pick(candidates)
            if not ids:
                return [], False
            await session.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.id.in_(ids), _due(now))
                .values(
                    status=DeliveryStatus.DELIVERING,
                    lease_until=now + timedelta(seconds=self.settings.notification_lease_s),
                    lease_token=token,
                    attempts=NotificationDelivery.attempts + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            rows = (
                await session.execute(
                    select(NotificationDelivery, NotificationChannel)
                    .join(
                        NotificationChannel,
                        NotificationChannel.id == NotificationDelivery.channel_id,
                    )
                    .where(NotificationDelivery.lease_token == token)
                )
            ).all()
            claimed = [
                _Claimed(
                    id=d.id,
                    token=token,
                    organization_id=d.organization_id,
                    channel_id=d.channel_id,
                    event=d.event,
                    body=d.body,
                    attempts=d.attempts,
                    channel_type=c.type,
                    config=dict(c.config),
                    secret_encrypted=c.secret_encrypted,
                )
                for d, c in rows
            ]
            await session.commit()
        # Left over: candidates the caps skipped, or as many as the query's limit.
        return claimed, len(ids) < len(candidates) or len(candidates) >= limit

    async def _deliver(self, claimed: _Claimed) -> None:
        try:
            if claimed.channel_type == ChannelType.IN_APP:
                if await self._write_in_app(claimed):  # written and recorded at once
                    ATTEMPTS.labels(claimed.channel_type, "delivered").inc()
                    self._delivered(claimed)
                return
            outcome = await self._send(claimed)
        except Exception as error:  # a bug must not stop the other deliveries
            log.exception("notification_send_crashed", delivery_id=str(claimed.id))
            outcome = Outcome(False, f"internal error: {type(error).__name__}")
        try:
            await self._record(claimed, outcome)
        except Exception as error:  # database down: the lease expires, it is sent again
            log.warning(
                "notification_record_failed",
                delivery_id=str(claimed.id),
                error=str(error).splitlines()[0],
            )

    async def _send(self, claimed: _Claimed) -> Outcome:
        body = claimed.body.encode()
        if claimed.channel_type == ChannelType.WEBHOOK:
            assert self._client is not None
            try:
                secret = (
                    None
                    if claimed.secret_encrypted is None
                    else self.box.decrypt(claimed.secret_encrypted)
                )
            except ValueError as error:
                return Outcome(False, str(error), final=True)
            headers = webhook_headers(
                event=claimed.event, delivery_id=str(claimed.id), secret=secret, body=body
            )
            return await send_webhook(
                self._client,
                str(claimed.config["url"]),
                body=body,
                headers=headers,
                deadline_s=self.settings.notification_timeout_s,
            )
        if claimed.channel_type == ChannelType.EMAIL:
            message = email_message(
                self.settings,
                list(claimed.config.get("recipients", [])),
                delivery_id=str(claimed.id),
                body=orjson.loads(body),
            )
            return await send_email(self.settings, message)
        return Outcome(False, f"unknown channel type {claimed.channel_type!r}", final=True)

    def _delivered(self, claimed: _Claimed) -> None:
        if self.on_delivered is not None:
            self.on_delivered(claimed.organization_id, str(claimed.channel_type))

    async def _write_in_app(self, claimed: _Claimed) -> bool:
        """Write the notification and mark the delivery in one transaction: exactly once."""
        payload: dict[str, Any] = orjson.loads(claimed.body)
        now = utcnow()
        async with self.database.session(write=True) as session:
            marked = await _mark(
                session,
                claimed,
                status=DeliveryStatus.DELIVERED,
                delivered_at=now,
                last_error=None,
            )
            if not marked:
                return False  # another sender holds it now
            alert = payload.get("alert") or {}
            values = {
                "id": uuid.uuid4(),
                "organization_id": uuid.UUID(payload["organization_id"]),
                "channel_id": uuid.UUID(payload["channel_id"]),
                "delivery_id": claimed.id,
                "alert_id": uuid.UUID(alert["id"]) if alert.get("id") else None,
                "event": claimed.event,
                "title": _title(claimed.event, alert),
                "payload": payload,
                "read_at": None,
                "created_at": now,
            }
            dialect = postgresql if self.database.dialect == "postgresql" else sqlite
            await session.execute(
                dialect.insert(Notification)
                .values(**values)
                .on_conflict_do_nothing(index_elements=[Notification.delivery_id])
            )
            await session.commit()
        return True

    async def _record(self, claimed: _Claimed, outcome: Outcome) -> None:
        now = utcnow()
        settings = self.settings
        if outcome.delivered:
            values: dict[str, Any] = {
                "status": DeliveryStatus.DELIVERED,
                "delivered_at": now,
                "last_error": None,
            }
            result = "delivered"
        elif outcome.final or claimed.attempts >= settings.notification_max_attempts:
            values = {"status": DeliveryStatus.FAILED, "last_error": outcome.error}
            result = "failed"
        else:
            delay = backoff_s(
                claimed.attempts,
                base_s=settings.notification_retry_base_s,
                max_s=settings.notification_retry_max_s,
            )
            values = {
                "status": DeliveryStatus.PENDING,
                "next_attempt_at": now + timedelta(seconds=delay),
                "last_error": outcome.error,
            }
            result = "retry"
        async with self.database.session(write=True) as session:
            marked = await _mark(session, claimed, **values)
            await session.commit()
        ATTEMPTS.labels(claimed.channel_type, result).inc()
        # Not "event": that is the log call's own first argument (a TypeError here).
        fields = {
            "delivery_id": str(claimed.id),
            "notification_event": claimed.event,
            "attempt": claimed.attempts,
        }
        if marked and result == "delivered":
            self._delivered(claimed)
        if not marked:
            log.warning("notification_lease_lost", **fields)
        elif result == "failed":
            log.warning("notification_given_up", error=outcome.error, **fields)
        elif result == "retry":
            log.info("notification_retry", error=outcome.error, **fields)


async def _mark(session: AsyncSession, claimed: _Claimed, **values: Any) -> bool:
    """Record an outcome if this sender still holds the lease; False otherwise."""
    result = await session.execute(
        update(NotificationDelivery)
        .where(
            NotificationDelivery.id == claimed.id,
            NotificationDelivery.lease_token == claimed.token,
            NotificationDelivery.status == DeliveryStatus.DELIVERING,
        )
        .values(lease_until=None, lease_token=None, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def _title(event: str, alert: dict[str, Any]) -> str:
    if not alert:
        return event
    what = event.removeprefix("alert.").replace("_", " ")
    return f"{alert.get('severity', '')} alert {what}: {alert.get('name', '')}"[:300]
