"""The dispatcher: applies the broker credential outbox to Mosquitto's dynamic security.

Rows are applied in order per device (a device's row is due only when no earlier row of that
device is pending), each by one process: it is claimed by a conditional UPDATE that sets a
lease, applied outside any transaction, then recorded. A failure (broker unreachable, a
command refused) leaves the row pending with `last_error` and a later `next_attempt_at`
(exponential backoff, capped); nothing is ever skipped, and a restarted Fleetcore continues
where the last one stopped. A process that dies mid-apply leaves a lease that expires; the
row is applied again, which the idempotent operations (apply.py) allow.

Woken after every commit that staged rows (outbox.OutboxStager) and when the broker comes
back; otherwise it looks every `poll_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import aliased

from fleetcore.broker_sync import apply
from fleetcore.broker_sync.dynsec import DynsecClient, DynsecError, DynsecUnavailable
from fleetcore.broker_sync.metrics import APPLIED, FAILURES, PENDING
from fleetcore.broker_sync.models import BrokerCredentialOutbox as Outbox
from fleetcore.broker_sync.outbox import OutboxStager, SecretBox
from fleetcore.config import Settings
from fleetcore.db import Database, utcnow
from fleetcore.devices import credential_events
from fleetcore.devices.credential_events import CredentialAction
from fleetcore.external_broker.connection import BrokerUrl

log = structlog.get_logger(__name__)
_rng = random.SystemRandom()
_Earlier = aliased(Outbox)


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: int
    device_id: uuid.UUID
    action: str
    secret: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class _Outcome:
    """done: the row is finished (note: why it could not be applied fully, if so)."""

    done: bool
    error: str | None = None
    reason: str = "refused"


def _due(now: Any) -> Any:
    earlier_pending = exists().where(
        _Earlier.device_id == Outbox.device_id,
        _Earlier.done_at.is_(None),
        _Earlier.id < Outbox.id,
    )
    return (
        Outbox.done_at.is_(None),
        Outbox.next_attempt_at <= now,
        or_(Outbox.lease_until.is_(None), Outbox.lease_until < now),
        ~earlier_pending,
    )


class BrokerSync:
    """Stages credential changes (while running) and applies them; a lifespan Component."""

    name = "broker-sync"

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        poll_s: float = 3.0,
        batch: int = 32,
        lease_s: float = 120.0,
        retry_base_s: float = 1.0,
        retry_max_s: float = 60.0,
        connect_wait_s: float = 3.0,
        concurrency: int = 8,
    ) -> None:
        self.database = database
        self.url = BrokerUrl.from_settings(settings)
        self.stager = OutboxStager(SecretBox(settings.secret_key.get_secret_value()), self.wake)
        self.poll_s = poll_s
        self.batch = batch
        self.lease_s = lease_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.connect_wait_s = connect_wait_s
        self.concurrency = concurrency
        self.rounds = 0  # finished rounds (tests wait on it)
        self.dynsec: DynsecClient | None = None
        self._wake = asyncio.Event()
        self._reconnected = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """False on a database that allows no background writes."""
        return self.database.background_writes_allowed

    def wake(self) -> None:
        """Look at the outbox now (after a commit that staged rows)."""
        self._wake.set()

    async def start(self) -> None:
        """Stage from now on; connect to the broker and apply what is pending."""
        credential_events.listeners.append(self.stager)
        if not self.enabled:
            return
        self.dynsec = DynsecClient(self.url.client("dynsec"), self.url.host, self.url.port)
        self.dynsec.on_connected = self._on_broker_back
        await self.dynsec.start()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="broker-sync")

    async def stop(self) -> None:
        """Finish the round in progress, stop staging, disconnect."""
        with contextlib.suppress(ValueError):
            credential_events.listeners.remove(self.stager)
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        if self.dynsec is not None:
            await self.dynsec.stop()
            self.dynsec = None

    def _on_broker_back(self) -> None:
        self._reconnected = True
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            more = False
            try:
                more = await self.run_once()
            except Exception as error:  # database down: try again at the next poll
                FAILURES.labels("internal").inc()
                log.warning("broker_sync_round_failed", error=str(error).splitlines()[0])
            self.rounds += 1
            if more or self._stopping:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def run_once(self) -> bool:
        """Apply the due rows (one batch); True if more may be due."""
        if self._reconnected:
            self._reconnected = False
            await self._retry_now()
        claimed = await self._claim()
        if not claimed:
            return False
        assert self.dynsec is not None
        try:
            await self.dynsec.wait_connected(self.connect_wait_s)
        except DynsecUnavailable as error:
            await self._record(
                {c.id: (c, _Outcome(False, str(error), "unavailable")) for c in claimed}
            )
            return False
        # Distinct devices (one head row each): their order does not matter. A few at once:
        # the broker handles commands one by one (and rewrites its whole file at each).
        limit = asyncio.Semaphore(self.concurrency)

        async def bounded(row: _Claimed) -> _Outcome:
            async with limit:
                return await self._apply(row)

        outcomes = await asyncio.gather(*(bounded(c) for c in claimed))
        await self._record({c.id: (c, o) for c, o in zip(claimed, outcomes, strict=True)})
        return len(claimed) >= self.batch and all(o.done for o in outcomes)

    async def _retry_now(self) -> None:
        """The broker is back: what waited for it is due at once."""
        now = utcnow()
        waiting = (Outbox.done_at.is_(None), Outbox.next_attempt_at > now)
        # Look first: an UPDATE takes SQLite's write lock even when it changes nothing.
        async with self.database.session() as session:
            if await session.scalar(select(Outbox.id).where(*waiting).limit(1)) is None:
                return
        async with self.database.session(write=True) as session:
            await session.execute(update(Outbox).where(*waiting).values(next_attempt_at=now))
            await session.commit()

    async def _claim(self) -> list[_Claimed]:
        now = utcnow()
        query = select(Outbox.id).where(*_due(now)).order_by(Outbox.id).limit(self.batch)
        # Look first without SQLite's write lock: an idle poll must not make writers wait.
        async with self.database.session() as session:
            PENDING.set(
                await session.scalar(
                    select(func.count()).select_from(Outbox).where(Outbox.done_at.is_(None))
                )
                or 0
            )
            ids = list((await session.scalars(query)).all())
        if not ids:
            return []
        async with self.database.session(write=True) as session:
            # Conditional: of two processes claiming a row, one updates it, the other none.
            rows = (
                await session.execute(
                    update(Outbox)
                    .where(
                        Outbox.id.in_(ids),
                        Outbox.done_at.is_(None),
                        or_(Outbox.lease_until.is_(None), Outbox.lease_until < now),
                    )
                    .values(
                        lease_until=now + timedelta(seconds=self.lease_s),
                        attempts=Outbox.attempts + 1,
                    )
                    .returning(
                        Outbox.id, Outbox.device_id, Outbox.action, Outbox.secret, Outbox.attempts
                    )
                    .execution_options(synchronize_session=False)
                )
            ).all()
            await session.commit()
        return sorted((_Claimed(*row) for row in rows), key=lambda c: c.id)

    async def _apply(self, row: _Claimed) -> _Outcome:
        dynsec = self.dynsec
        assert dynsec is not None
        try:
            if row.action == CredentialAction.UPSERT:
                if row.secret is None:
                    return _Outcome(True, "no token staged: rotate the device's token")
                try:
                    token = self.stager.box.decrypt(row.secret, row.device_id)
                except ValueError as error:  # the secret key changed: it never will decrypt
                    return _Outcome(True, f"{error}: rotate the device's token")
                await apply.upsert(dynsec, row.device_id, token)
            elif row.action in (CredentialAction.DISABLE, CredentialAction.ENABLE):
                enable = row.action == CredentialAction.ENABLE
                if not await apply.set_enabled(dynsec, row.device_id, enable):
                    return _Outcome(True, "no client in the broker: rotate the device's token")
            elif row.action == CredentialAction.DELETE:
                await apply.delete(dynsec, row.device_id)
            else:
                return _Outcome(True, f"unknown action {row.action!r}")
        except DynsecUnavailable as error:
            return _Outcome(False, str(error), "unavailable")
        except DynsecError as error:
            return _Outcome(False, f"the broker refused {error}", "refused")
        except Exception as error:  # a bug must not stop the other rows
            log.exception("broker_sync_apply_crashed", outbox_id=row.id)
            return _Outcome(False, f"internal error: {type(error).__name__}", "internal")
        return _Outcome(True)

    async def _record(self, results: dict[int, tuple[_Claimed, _Outcome]]) -> None:
        now = utcnow()
        async with self.database.session(write=True) as session:
            for row_id, (row, outcome) in results.items():
                if outcome.done:
                    # The token is wiped the moment the broker has it.
                    values: dict[str, Any] = {
                        "done_at": now,
                        "secret": None,
                        "lease_until": None,
                        "last_error": outcome.error,
                    }
                else:
                    delay = self._backoff_s(row.attempts)
                    values = {
                        "lease_until": None,
                        "next_attempt_at": now + timedelta(seconds=delay),
                        "last_error": outcome.error,
                    }
                await session.execute(
                    update(Outbox)
                    .where(Outbox.id == row_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
            await session.commit()
        for row, outcome in results.values():
            fields = {"outbox_id": row.id, "device_id": str(row.device_id), "action": row.action}
            if outcome.done and outcome.error is None:
                APPLIED.labels(row.action).inc()
            elif outcome.done:
                APPLIED.labels(row.action).inc()
                log.warning("broker_sync_incomplete", note=outcome.error, **fields)
            else:
                FAILURES.labels(outcome.reason).inc()
                log.info("broker_sync_retry", error=outcome.error, attempt=row.attempts, **fields)

    def _backoff_s(self, attempts: int) -> float:
        """Base doubling per attempt, capped, with jitter (half to all of it)."""
        delay: float = min(self.retry_max_s, self.retry_base_s * 2.0 ** max(attempts - 1, 0))
        return delay / 2 + _rng.random() * delay / 2
