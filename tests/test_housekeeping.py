"""Housekeeping retention, one test per table on SQLite and PostgreSQL: old rows go, young
rows and other organizations' rows stay, unfinished rows stay whatever their age, and an
organization's own days are honoured."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from fleetcore import models  # noqa: F401 (every table, for the foreign keys)
from fleetcore.accounts.models import AccountLink
from fleetcore.analytics.models import AnalyticsFinding
from fleetcore.audit.models import AuditEvent
from fleetcore.auth.models import Organization, RefreshToken, User
from fleetcore.broker_sync.models import BrokerCredentialOutbox
from fleetcore.commands.models import CommandStatus, DeviceCommand
from fleetcore.db import Base, Database, utcnow
from fleetcore.deadletters.models import DeadLetter
from fleetcore.devices.models import DeviceCredential
from fleetcore.devices.service import new_device
from fleetcore.events.models import DeviceEvent
from fleetcore.housekeeping.job import run_housekeeping
from fleetcore.housekeeping.models import RetentionOverride
from fleetcore.housekeeping.purge import RUNNER_LOCK_KEY
from fleetcore.housekeeping.targets import BY_TABLE, TARGETS, credential_grace
from fleetcore.notifications.models import (
    DeliveryStatus,
    Notification,
    NotificationChannel,
    NotificationDelivery,
)
from fleetcore.status.models import DeviceStatusChange
from tests.conftest import make_settings

DAYS = 10  # the default under test
OLD = timedelta(days=20)
YOUNG = timedelta(days=2)


@dataclass
class Org:
    """An organization with a device, a user and a notification channel."""

    id: uuid.UUID
    device_id: uuid.UUID
    user_id: uuid.UUID
    channel_id: uuid.UUID


async def _org(db: Database) -> Org:
    slug = f"hk-{uuid.uuid4().hex[:8]}"
    async with db.session(write=True) as session:
        org = Organization(name=slug, slug=slug)
        session.add(org)
        await session.flush()
        device, _ = new_device(org.id, name="d", serial_number=slug)
        user = User(
            organization_id=org.id, email=f"u@{slug}.example.com", password_hash="x", role="viewer"
        )
        channel = NotificationChannel(organization_id=org.id, name="c", type="in_app")
        session.add_all([device, user, channel])
        await session.commit()
        return Org(org.id, device.id, user.id, channel.id)


# One row of each table, `age` old (what "age" means is the table's rule), of `org` or none.
Maker = Callable[[Org | None, timedelta, datetime], Base]


def _audit(org: Org | None, age: timedelta, now: datetime) -> Base:
    return AuditEvent(
        organization_id=org and org.id, actor_type="system", action="x.y", ts=now - age
    )


def _event(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return DeviceEvent(organization_id=org.id, device_id=org.device_id, ts=now - age, type="door")


def _dead_letter(org: Org | None, age: timedelta, now: datetime) -> Base:
    return DeadLetter(
        organization_id=org and org.id,
        transport="mqtt",
        topic="t",
        reason="bad_json",
        detail="",
        payload_excerpt="",
        payload_size=0,
        received_at=now - age,
    )


def _status(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return DeviceStatusChange(
        organization_id=org.id, device_id=org.device_id, status="online", reason="connect",
        at=now - age,
    )  # fmt: skip


def _delivery(org: Org | None, age: timedelta, now: datetime, status: str = "delivered") -> Base:
    assert org is not None
    return NotificationDelivery(
        organization_id=org.id, channel_id=org.channel_id, event="alert.opened", body="{}",
        status=status, created_at=now - age,
    )  # fmt: skip


def _notification(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return Notification(
        organization_id=org.id, delivery_id=uuid.uuid4(), event="alert.opened", title="t",
        created_at=now - age,
    )  # fmt: skip


def _command(org: Org | None, age: timedelta, now: datetime, status: str = "succeeded") -> Base:
    assert org is not None
    return DeviceCommand(
        organization_id=org.id, device_id=org.device_id, rpc_id=uuid.uuid4().int % 2**31,
        method="reboot", timeout_s=60, status=status, created_at=now - age,
        expires_at=now - age + timedelta(seconds=60),
    )  # fmt: skip


def _finding(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return AnalyticsFinding(
        organization_id=org.id, device_id=org.device_id, key="t", method="zscore",
        severity="minor", ts=int((now - age).timestamp() * 1000), score=5.0, threshold=3.0,
        evidence=[],
    )  # fmt: skip


def _refresh(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    # `age` past its expiry and past the longest access token's life (credential_grace)
    grace = credential_grace(make_settings(Path()))
    return RefreshToken(
        user_id=org.user_id, family_id=uuid.uuid4(), token_hash=uuid.uuid4().hex,
        expires_at=now - age - grace,
    )  # fmt: skip


def _credential(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return DeviceCredential(
        device_id=org.device_id, token_hash=uuid.uuid4().hex, revoked_at=now - age
    )


def _outbox(org: Org | None, age: timedelta, now: datetime) -> Base:
    assert org is not None
    return BrokerCredentialOutbox(
        organization_id=org.id, device_id=org.device_id, action="upsert", done_at=now - age
    )


def _link(org: Org | None, age: timedelta, now: datetime) -> Base:
    return AccountLink(
        purpose="reset", token_hash=uuid.uuid4().hex, email=f"{uuid.uuid4().hex}@example.com",
        expires_at=now - age,
    )  # fmt: skip


MAKERS: dict[str, Maker] = {
    "audit_events": _audit,
    "device_events": _event,
    "dead_letters": _dead_letter,
    "device_status_history": _status,
    "notification_deliveries": _delivery,
    "notifications": _notification,
    "device_commands": _command,
    "analytics_findings": _finding,
    "refresh_tokens": _refresh,
    "device_credentials": _credential,
    "broker_credential_outbox": _outbox,
    "account_links": _link,
}
# Rows that are never deleted, however old: not finished, or still valid.
UNFINISHED: dict[str, Maker] = {
    "notification_deliveries": lambda o, a, n: _delivery(o, a, n, DeliveryStatus.PENDING),
    "device_commands": lambda o, a, n: _command(o, a, n, CommandStatus.QUEUED),
    "device_credentials": lambda o, a, n: DeviceCredential(
        device_id=o.device_id if o else None, token_hash=uuid.uuid4().hex, created_at=n - a
    ),
    "broker_credential_outbox": lambda o, a, n: BrokerCredentialOutbox(
        organization_id=o.id if o else None,
        device_id=uuid.uuid4(),
        action="upsert",
        created_at=n - a,
    ),
    "account_links": lambda o, a, n: AccountLink(  # made long ago, still valid
        purpose="invite",
        token_hash=uuid.uuid4().hex,
        email=f"{uuid.uuid4().hex}@example.com",
        created_at=n - a,
        expires_at=n + timedelta(days=1),
    ),
    "refresh_tokens": lambda o, a, n: RefreshToken(  # expired, but within the grace
        user_id=o.user_id if o else None,
        family_id=uuid.uuid4(),
        token_hash=uuid.uuid4().hex,
        expires_at=n - timedelta(days=DAYS + 1),
    ),
}


def test_every_target_has_a_maker() -> None:
    assert set(MAKERS) == {target.table for target in TARGETS}


async def _add(db: Database, rows: list[Base]) -> list[Any]:
    async with db.session(write=True) as session:
        session.add_all(rows)
        await session.commit()
        return [row.id for row in rows]  # type: ignore[attr-defined]


async def _kept(db: Database, table: str, ids: list[Any]) -> int:
    model = Base.metadata.tables[table]
    async with db.session() as session:
        query = select(func.count()).select_from(model).where(model.c.id.in_(ids))
        return int(await session.scalar(query) or 0)


@pytest.mark.parametrize("table", list(MAKERS))
async def test_old_rows_go_young_and_other_organizations_rows_stay(
    live_database: Database, tmp_path: Path, table: str
) -> None:
    target = BY_TABLE[table]
    make = MAKERS[table]
    db = live_database
    a, b = await _org(db), await _org(db)
    now = utcnow()
    old_a = await _add(db, [make(a, OLD, now) for _ in range(3)])  # two chunks of 2
    young_a = await _add(db, [make(a, YOUNG, now)])
    young_b = await _add(db, [make(b, YOUNG, now)])
    old_b = await _add(db, [make(b, OLD, now)])
    unfinished = await _add(db, [UNFINISHED[table](a, OLD * 5, now)]) if table in UNFINISHED else []
    orphans = []
    if target.orphans is not None:  # rows of no organization: the default applies
        orphans = await _add(db, [make(None, OLD, now), make(None, YOUNG, now)])
    if target.overridable:  # B keeps these for 30 days: its 20-day-old row stays
        async with db.session(write=True) as session:
            session.add(RetentionOverride(organization_id=b.id, table_name=table, days=30))
            await session.commit()
    settings = make_settings(tmp_path, housekeeping_chunk_rows=2, **{target.setting: DAYS})

    report = await run_housekeeping(db, settings, now=now)

    assert await _kept(db, table, old_a) == 0
    assert await _kept(db, table, young_a + young_b + unfinished) == 2 + len(unfinished)
    # Other organizations' old rows go by their own days where they may set them.
    assert await _kept(db, table, old_b) == (1 if target.overridable else 0)
    if orphans:
        assert await _kept(db, table, orphans[:1]) == 0
        assert await _kept(db, table, orphans[1:]) == 1
    expected = 3 + (0 if target.overridable else 1) + (1 if orphans else 0)
    assert report.rows_deleted[table] == expected
    # Run again: nothing more to delete; 0 days keeps everything.
    assert table not in (await run_housekeeping(db, settings, now=now)).rows_deleted
    # 0 days keeps A's rows forever; B's own 30 days still apply to B's.
    forever = make_settings(tmp_path, **{target.setting: 0})
    await run_housekeeping(db, forever, now=now + OLD * 10)
    assert await _kept(db, table, young_a) == 1
    assert await _kept(db, table, young_b) == (0 if target.overridable else 1)


async def test_an_organization_may_keep_for_less_than_the_default(
    live_database: Database, tmp_path: Path
) -> None:
    db = live_database
    a, b = await _org(db), await _org(db)
    now = utcnow()
    rows = await _add(db, [_event(a, YOUNG * 2, now), _event(b, YOUNG * 2, now)])
    async with db.session(write=True) as session:
        session.add(RetentionOverride(organization_id=a.id, table_name="device_events", days=3))
        await session.commit()
    settings = make_settings(tmp_path, device_events_retention_days=DAYS)
    await run_housekeeping(db, settings, now=now)
    assert await _kept(db, "device_events", rows[:1]) == 0
    assert await _kept(db, "device_events", rows[1:]) == 1


async def test_a_second_runner_skips_while_one_holds_the_lock(
    live_database: Database, tmp_path: Path, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite serves one process: no second runner")
    async with live_database.engine.connect() as holder:
        await holder.exec_driver_sql("SELECT pg_advisory_lock($1)", (RUNNER_LOCK_KEY,))
        try:
            report = await run_housekeeping(live_database, make_settings(tmp_path))
        finally:
            await holder.exec_driver_sql("SELECT pg_advisory_unlock($1)", (RUNNER_LOCK_KEY,))
    assert report.skipped
    assert not (await run_housekeeping(live_database, make_settings(tmp_path))).skipped
