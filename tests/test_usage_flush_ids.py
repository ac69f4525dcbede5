"""A flush whose commit fails with an unknown outcome is written again under its flush id:
added once whether the first commit went through (its acknowledgement lost) or not.

PostgreSQL: a TCP proxy breaks the connection at COMMIT, after the server committed or
before it saw the COMMIT. SQLite (no wire): the commit raises after the file committed (an
after_commit listener), or before it (the engine's commit event)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from fleetcore.db import Database, create_engine, utcnow
from fleetcore.usage import rollup
from fleetcore.usage.kinds import UsageKind
from fleetcore.usage.meter import UsageMeter
from fleetcore.usage.models import UsageDaily, UsageDeviceDay, UsageFlush
from tests.conftest import make_settings
from tests.support.ack_loss import AckLosingProxy
from tests.support.postgres import PostgresServer


class CommitLost(ConnectionResetError):
    """The connection died at COMMIT (SQLite's stand-in for a broken socket)."""


@dataclass
class Lossy:
    """The meter's own database, and a way to break its next commit."""

    database: Database
    arm: Callable[[bool], None]  # True: after the commit is done; False: before
    lost: Callable[[], int]


@pytest.fixture
async def lossy(
    backend: str,
    live_database: Database,
    postgres_server: PostgresServer | None,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Lossy]:
    if backend == "postgresql":
        assert postgres_server is not None
        proxy = AckLosingProxy(postgres_server.port)
        await proxy.start()
        url = make_url(str(request.getfixturevalue("live_pg_url"))).set(port=proxy.port)
        database = Database(create_engine(url, pool_size=2))
        try:
            yield Lossy(database, lambda after: proxy.arm(deliver=after), lambda: proxy.lost)
        finally:
            await database.close()
            await proxy.stop()
        return
    database = Database.from_url(live_database.engine.url, pool_size=2)
    pool = database.engine.sync_engine.pool
    armed: dict[str, bool] = {}
    lost = [0]

    def before(connection: Any) -> None:  # the engine's commit event: before the DBAPI commit
        if armed.pop("before", False):
            lost[0] += 1
            connection.invalidate()  # closed: its transaction goes with it, uncommitted
            raise CommitLost("connection lost before COMMIT reached the database")

    def after(session: Session) -> None:  # the file holds the commit by now
        bind = session.get_bind()
        if getattr(bind, "pool", None) is pool and armed.pop("after", False):
            lost[0] += 1
            raise CommitLost("connection lost after COMMIT: the acknowledgement is gone")

    def arm(after_commit: bool) -> None:
        armed["after" if after_commit else "before"] = True

    event.listen(database.engine.sync_engine, "commit", before)
    event.listen(Session, "after_commit", after)
    try:
        yield Lossy(database, arm, lambda: lost[0])
    finally:
        event.remove(Session, "after_commit", after)
        await database.close()


async def stored(database: Database, org: uuid.UUID) -> tuple[int, int, int]:
    """(the organization's counts, its device days, flush ids) as the database holds them."""
    async with database.session() as session:
        n = await session.scalar(
            select(func.coalesce(func.sum(UsageDaily.n), 0)).where(
                UsageDaily.organization_id == org
            )
        )
        devices = await session.scalar(
            select(func.count()).where(UsageDeviceDay.organization_id == org)
        )
        ids = await session.scalar(select(func.count()).select_from(UsageFlush))
    return int(n or 0), int(devices or 0), int(ids or 0)


@pytest.mark.parametrize("committed", [True, False], ids=["ack-lost", "commit-lost"])
async def test_a_commit_with_an_unknown_outcome_is_added_exactly_once(
    live_database: Database, lossy: Lossy, committed: bool
) -> None:
    meter = UsageMeter(lossy.database)
    org, device = uuid.uuid4(), uuid.uuid4()
    meter.count(org, UsageKind.API_REQUESTS, 5, transport="user")
    meter.device_seen(org, device)
    lossy.arm(committed)
    with pytest.raises(Exception, match=r"COMMIT|connection|closed") as failed:
        await meter.flush()
    assert lossy.lost() == 1, failed.value
    # What the database holds now: everything, or nothing.
    assert await stored(live_database, org) == ((5, 1, 1) if committed else (0, 0, 0))
    assert meter.pending == 2  # kept apart with its flush id, not merged back
    assert meter.today(org, UsageKind.API_REQUESTS) == 5
    meter.count(org, UsageKind.API_REQUESTS, 2, transport="user")
    assert meter.today(org, UsageKind.API_REQUESTS) == 7
    await meter.flush()  # the unsure batch under its old id, the new one under a new id
    assert await stored(live_database, org) == (7, 1, 2)
    assert meter.pending == 0
    assert meter.today(org, UsageKind.API_REQUESTS) == 7
    assert meter.today(org, UsageKind.DEVICES_ACTIVE) == 1
    await meter.flush()  # nothing left: adds nothing, records no id
    assert await stored(live_database, org) == (7, 1, 2)


async def test_the_rollup_job_forgets_old_flush_ids(live_database: Database) -> None:
    now = utcnow()
    old, recent = uuid.uuid4(), uuid.uuid4()
    async with live_database.session(write=True) as session:
        await session.execute(
            insert(UsageFlush),
            [{"id": old, "at": now - timedelta(days=8)}, {"id": recent, "at": now}],
        )
        await session.commit()
    await rollup.roll_up(live_database, make_settings(Path(".")), now=now)
    async with live_database.session() as session:
        left = set((await session.scalars(select(UsageFlush.id))).all())
    assert left == {recent}
