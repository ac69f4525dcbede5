"""Retention: each organization's policy, and the job that removes what it no longer keeps.

Raw readings older than `raw_days` and roll-ups older than their own days are removed per
organization (0 keeps them forever), packed hours of numbers (compaction.py) with them. On
PostgreSQL a daily partition is shared by every organization, so whole partitions are
dropped only once they are older than the longest raw retention of all organizations; what
remains (shorter policies, the DEFAULT partition, the day straddling the cut-off) is deleted
in bounded chunks, one short transaction each, so ingest never waits long. SQLite deletes in
the same bounded chunks.

An organization whose policy `requires_archive` loses raw readings a whole archived day at a
time instead: only days whose archive is current and holds as many readings as are stored,
through the `ArchivedDays` the caller passes (fleetcore.archive.gate; telemetry does not
import the archive, which reads telemetry; with none passed such readings stay). Partitions
are then not dropped at all while any organization has that rule (a partition holds every
organization's day), so such a platform deletes in chunks only.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

import structlog
from prometheus_client import Counter
from sqlalchemy import BigInteger, Uuid, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.elements import TextClause

from fleetcore.advisory_locks import LockKey
from fleetcore.audit import service as audit
from fleetcore.auth.models import Organization
from fleetcore.auth.principal import Principal, Role
from fleetcore.config import Settings
from fleetcore.db import SQLITE_BEGIN_OPTION, Database
from fleetcore.errors import Forbidden, Invalid
from fleetcore.jobs import JobScheduler
from fleetcore.plans import service as plans
from fleetcore.plans.limits import Limit
from fleetcore.plans.models import OrganizationPlan, Plan
from fleetcore.telemetry import partitions, sqlite_packing
from fleetcore.telemetry.models import PACKED_NUM, ROLLUPS, VALUE_TABLES, Retention
from fleetcore.telemetry.packed import BLOCK_MS

log = structlog.get_logger(__name__)

DAY_MS = partitions.DAY_MS
MAX_DAYS = 3650  # ten years; longer is "forever" (0)
# One runner at a time across `serve` processes sharing a PostgreSQL database.
RUNNER_LOCK_KEY = LockKey.TELEMETRY_RETENTION

ROWS_DELETED = Counter(
    "fleetcore_telemetry_retention_rows_deleted_total",
    "Rows removed by retention in chunked deletes, by table (dropped partitions not counted).",
    ["table"],
)
FIELDS = ("raw_days", "rollup_1m_days", "rollup_1h_days")
VALUE_TABLES_NAMES = tuple(t.name for t in VALUE_TABLES.values())


@dataclass(frozen=True, slots=True)
class Policy:
    """Days kept of raw readings, 1-minute and 1-hour roll-ups; 0 keeps them forever.
    `requires_archive`: raw readings go only a whole archived day at a time."""

    raw_days: int
    rollup_1m_days: int
    rollup_1h_days: int
    requires_archive: bool = False

    def check(self) -> None:
        """Raise Invalid naming the field unless 0 ≤ days ≤ MAX_DAYS and raw ≤ 1m ≤ 1h."""
        values = asdict(self)
        for name in FIELDS:
            if not 0 <= values[name] <= MAX_DAYS:
                raise Invalid(
                    f"{name} must be between 0 (forever) and {MAX_DAYS}",
                    code="RETENTION_INVALID",
                    details={"field": name},
                )
        # A coarser series outlives a finer one; 0 (forever) is longer than any number.
        for shorter, longer in pairwise(FIELDS):
            if _days(values[longer]) < _days(values[shorter]):
                raise Invalid(
                    f"{longer} must be 0 (forever) or at least {shorter} ({values[shorter]})",
                    code="RETENTION_ORDER",
                    details={"field": longer},
                )


def _days(value: int) -> float:
    return float("inf") if value == 0 else value


def capped(policy: Policy, cap: int | None) -> Policy:
    """The policy within a plan's retention days (None: no cap); forever becomes the cap."""
    if cap is None:
        return policy
    raw, m1, h1 = (cap if d == 0 or d > cap else d for d in astuple(policy)[:3])
    return Policy(raw, m1, h1, policy.requires_archive)


def _check_cap(policy: Policy, cap: int | None) -> None:
    """403 PLAN_LIMIT naming the field that keeps longer than the plan allows."""
    if cap is None:
        return
    for name in FIELDS:
        days = getattr(policy, name)
        if days == 0 or days > cap:
            raise Forbidden(
                f"the organization's plan keeps telemetry at most {cap} days; "
                f"{name} asks {'forever' if days == 0 else days}",
                code="PLAN_LIMIT",
                details={"limit": Limit.RETENTION_DAYS.value, "max": cap, "field": name},
            )


def default_policy(settings: Settings) -> Policy:
    """The policy of organizations that have not set their own."""
    return Policy(
        settings.retention_raw_days,
        settings.retention_rollup_1m_days,
        settings.retention_rollup_1h_days,
        settings.retention_requires_archive,
    )


@dataclass(frozen=True, slots=True)
class PolicyView:
    """An organization's effective policy and whether it is the platform default."""

    policy: Policy
    is_default: bool
    updated_at: datetime | None


async def get_policy(
    session: AsyncSession, principal: Principal, *, defaults: Policy
) -> PolicyView:
    """The caller's organization's policy (admins)."""
    principal.require(Role.ADMIN)
    limits = await plans.limits_for(session, principal.org_id)
    cap = limits.retention_days if limits else None
    row = await session.get(Retention, principal.org_id)
    if row is None:
        return PolicyView(capped(defaults, cap), True, None)
    requires = defaults.requires_archive if row.requires_archive is None else row.requires_archive
    return PolicyView(
        capped(Policy(row.raw_days, row.rollup_1m_days, row.rollup_1h_days, requires), cap),
        False,
        row.updated_at,
    )


async def set_policy(
    session: AsyncSession, principal: Principal, *, policy: Policy, defaults: Policy
) -> PolicyView:
    """Replace the caller's organization's policy (admins); audited."""
    principal.require(Role.ADMIN)
    policy.check()
    org_id = principal.org_id
    limits = await plans.limits_for(session, org_id)
    _check_cap(policy, limits.retention_days if limits else None)
    before = await get_policy(session, principal, defaults=defaults)
    row = await session.get(Retention, org_id)
    if row is None:
        row = Retention(organization_id=org_id, **asdict(policy))
        session.add(row)
    else:
        row.raw_days, row.rollup_1m_days, row.rollup_1h_days = (
            policy.raw_days,
            policy.rollup_1m_days,
            policy.rollup_1h_days,
        )
        row.requires_archive = policy.requires_archive
    await session.flush()
    audit.record(
        session,
        action="telemetry.retention.update",
        actor=principal,
        organization_id=org_id,
        target_type="organization",
        target_id=org_id,
        details={"before": asdict(before.policy), "after": asdict(policy)},
    )
    await session.commit()
    return PolicyView(policy, False, row.updated_at)


@dataclass(slots=True)
class RetentionReport:
    """What one run removed."""

    rows_deleted: dict[str, int] = field(default_factory=dict)
    partitions_dropped: list[str] = field(default_factory=list)
    skipped: bool = False  # another process holds the runner lock
    archived_days_purged: int = 0  # requires_archive: whole archived days deleted
    archive_mismatches: int = 0  # ...and days kept: more or fewer readings than archived


async def policies(engine: AsyncEngine, defaults: Policy) -> dict[uuid.UUID, Policy]:
    """The effective policy of every organization."""
    query = select(
        Organization.id,
        Retention.raw_days,
        Retention.rollup_1m_days,
        Retention.rollup_1h_days,
        Retention.requires_archive,
        Plan.max_retention_days,
    )
    query = (
        query.outerjoin(Retention, Retention.organization_id == Organization.id)
        .outerjoin(OrganizationPlan, OrganizationPlan.organization_id == Organization.id)
        .outerjoin(Plan, Plan.id == OrganizationPlan.plan_id)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    # An organization on a plan keeps no longer than the plan's retention days.
    return {
        org_id: capped(
            defaults
            if raw is None
            else Policy(raw, m1, h1, defaults.requires_archive if req is None else req),
            cap,
        )
        for org_id, raw, m1, h1, req, cap in rows
    }


class ArchivedDays(Protocol):
    """Deletes an organization's raw readings of archived days that ended by `cutoff_ms`."""

    async def __call__(self, purge: Purge, org_id: uuid.UUID, cutoff_ms: int) -> None: ...


async def run_retention(
    engine: AsyncEngine,
    *,
    defaults: Policy,
    chunk_rows: int = 10_000,
    now_ms: int | None = None,
    archived: ArchivedDays | None = None,
) -> RetentionReport:
    """Remove every organization's expired readings and roll-ups."""
    now_ms = now_ms if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    report = RetentionReport()
    async with single_runner(engine, RUNNER_LOCK_KEY) as mine:
        if not mine:
            report.skipped = True
            return report
        by_org = await policies(engine, defaults)
        raw = [p.raw_days for p in by_org.values()] or [defaults.raw_days]
        gated = any(p.requires_archive for p in by_org.values())
        # A partition is shared: only drop what every organization lets go, unarchived or not.
        if 0 not in raw and not gated:
            report.partitions_dropped = await partitions.drop_partitions_before(
                engine, now_ms - max(raw) * DAY_MS
            )
        purge = Purge(engine, chunk_rows, report)
        for org_id, policy in by_org.items():
            if policy.raw_days and policy.requires_archive:
                if archived is not None:  # else nothing: unarchived readings never go
                    await archived(purge, org_id, now_ms - policy.raw_days * DAY_MS)
            elif policy.raw_days:
                cutoff = now_ms - policy.raw_days * DAY_MS
                for table in VALUE_TABLES.values():
                    await purge.rows(table.name, "ts", org_id, cutoff)
                # Packed hours (compaction.py): whole ones, then the straddler.
                await purge.rows(PACKED_NUM.name, "block", org_id, cutoff - BLOCK_MS + 1)
                await purge.trim_packed(org_id, cutoff)
            for width, days in (
                (60_000, policy.rollup_1m_days),
                (3_600_000, policy.rollup_1h_days),
            ):
                if days:
                    # Whole buckets only: one that ends after the cut-off is kept.
                    cutoff = now_ms - days * DAY_MS - width + 1
                    await purge.rows(ROLLUPS[width].name, "bucket", org_id, cutoff)
    if report.partitions_dropped or any(report.rows_deleted.values()):
        log.info(
            "retention_applied",
            rows_deleted=report.rows_deleted,
            partitions_dropped=report.partitions_dropped,
        )
    return report


class Purge:
    """Chunked deletes of one organization's rows older than a cut-off."""

    def __init__(self, engine: AsyncEngine, chunk_rows: int, report: RetentionReport) -> None:
        self.engine = engine
        self.chunk_rows = chunk_rows
        self.report = report
        self.pg = engine.dialect.name == "postgresql"
        self._children: dict[str, list[str]] | None = None  # partitions, listed once a run

    async def rows(
        self, table: str, column: str, org_id: uuid.UUID, cutoff: int, *, since: int | None = None
    ) -> None:
        """Delete until nothing older than `cutoff` (and from `since` on, when given) is left,
        `chunk_rows` per transaction."""
        async with self.engine.connect() as connection:
            await connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            for target, by_ctid in await self._targets(table, cutoff):
                statement = _delete_chunk(
                    target, column, by_ctid=by_ctid, bounded=since is not None
                )
                params = {"org": org_id, "cutoff": cutoff, "n": self.chunk_rows}
                if since is not None:
                    params["since"] = since
                while True:
                    begin = time.monotonic()
                    async with connection.begin():
                        deleted = (await connection.execute(statement, params)).rowcount
                    if deleted:
                        ROWS_DELETED.labels(table).inc(deleted)
                        self.report.rows_deleted[table] = (
                            self.report.rows_deleted.get(table, 0) + deleted
                        )
                    if deleted < self.chunk_rows:
                        break
                    await asyncio.sleep(self._pause(time.monotonic() - begin))

    async def trim_packed(self, org_id: uuid.UUID, cutoff: int) -> None:
        """Cut the readings before `cutoff` out of the packed hours that straddle it (one
        per series at most; an hour left empty is deleted)."""
        async with self.engine.connect() as connection:
            await connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            async with connection.begin():
                params = {"org": org_id, "cutoff": cutoff}
                if self.pg:
                    trimmed = int((await connection.execute(_TRIM_PACKED, params)).scalar_one())
                else:
                    trimmed = await _trim_packed_sqlite(connection, params)
        if trimmed:
            self.report.rows_deleted[PACKED_NUM.name] = (
                self.report.rows_deleted.get(PACKED_NUM.name, 0) + trimmed
            )

    def _pause(self, chunk_s: float) -> float:
        """How long to wait before the next chunk so the ingest writer is never starved.

        PostgreSQL deletes take row locks only, which inserts do not wait on. SQLite has one
        writer at a time and its busy handler polls (up to every 100 ms), so rest at least
        that long and as long as the chunk took: retention gets at most half the lock.
        """
        return 0.0 if self.pg else max(0.1, chunk_s)

    async def _targets(self, table: str, cutoff: int) -> list[tuple[str, bool]]:
        """The tables to delete from and whether by ctid (PostgreSQL partitions and tables)."""
        if not self.pg:
            return [(table, False)]
        if table not in VALUE_TABLES_NAMES:
            return [(table, True)]
        if self._children is None:
            async with self.engine.connect() as connection:
                managed = await partitions.managed(connection)
                self._children = {
                    name: await partitions.children(connection, name) if managed else []
                    for name in VALUE_TABLES_NAMES
                }
        if not self._children[table]:
            return [(table, False)]  # a hypertable (TimescaleDB): delete through the parent
        targets = []
        for name in self._children[table]:
            daily = partitions.parse_partition(name)
            if daily is None or daily.start_ms < cutoff:  # the default, or an old enough day
                targets.append((name, True))
        return targets


# The packed hours of :org holding :cutoff, with only their readings from :cutoff on kept
# (none: the hour is deleted). Counts the hours changed.
_TRIM_PACKED = text(
    "WITH hit AS (SELECT p.series_id, p.block FROM ts_num_packed AS p "  # noqa: S608 (constants)
    "WHERE p.series_id IN (SELECT id FROM ts_series WHERE organization_id = :org) "
    f"AND p.block > :cutoff - {BLOCK_MS} AND p.block < :cutoff), "
    "kept AS (SELECT p.series_id, p.block, array_agg(u.o ORDER BY u.o) AS offs, "
    "array_agg(u.v ORDER BY u.o) AS vals FROM ts_num_packed AS p "
    "JOIN hit ON hit.series_id = p.series_id AND hit.block = p.block, "
    "unnest(p.offs, p.vals) AS u (o, v) WHERE p.block + u.o >= :cutoff GROUP BY 1, 2), "
    "emptied AS (DELETE FROM ts_num_packed AS p USING hit WHERE p.series_id = hit.series_id "
    "AND p.block = hit.block AND NOT EXISTS (SELECT 1 FROM kept WHERE "
    "kept.series_id = p.series_id AND kept.block = p.block) RETURNING 1), "
    "cut AS (UPDATE ts_num_packed AS p SET n = cardinality(kept.offs), offs = kept.offs, "
    "vals = kept.vals FROM kept "
    "WHERE p.series_id = kept.series_id AND p.block = kept.block "
    "AND cardinality(kept.offs) < cardinality(p.offs) RETURNING 1) "
    "SELECT (SELECT count(*) FROM emptied) + (SELECT count(*) FROM cut)"
).bindparams(bindparam("org", type_=Uuid()), bindparam("cutoff", type_=BigInteger()))


_STRADDLING = text(
    "SELECT series_id, block, vals FROM ts_num_packed "  # noqa: S608 (constants)
    "WHERE series_id IN (SELECT id FROM ts_series WHERE organization_id = :org) "
    f"AND block > :cutoff - {BLOCK_MS} AND block < :cutoff"
).bindparams(bindparam("org", type_=Uuid()))


async def _trim_packed_sqlite(connection: AsyncConnection, params: dict[str, Any]) -> int:
    """_TRIM_PACKED on SQLite, whose packed hours are decoded in Python (sqlite_packing.py)."""
    hit = (await connection.execute(_STRADDLING, params)).all()
    for series_id, block, blob in hit:
        cells = sqlite_packing.trim(blob, params["cutoff"] - block)
        key = (series_id, block)
        if not cells:
            await connection.exec_driver_sql(
                "DELETE FROM ts_num_packed WHERE series_id = ? AND block = ?", key
            )
            continue
        await connection.exec_driver_sql(
            "UPDATE ts_num_packed SET n = ?, vals = ? WHERE series_id = ? AND block = ?",
            (len(cells), sqlite_packing.encode(cells.items()), *key),
        )
    return len(hit)


def _delete_chunk(target: str, column: str, *, by_ctid: bool, bounded: bool = False) -> TextClause:
    """DELETE of at most :n rows of :org's series with `column` < :cutoff (and ≥ :since)."""
    since = f" AND {column} >= :since" if bounded else ""
    victims = (
        f"FROM {target} WHERE series_id IN "  # noqa: S608 (constant names)
        f"(SELECT id FROM ts_series WHERE organization_id = :org) AND {column} < :cutoff"
        f"{since} LIMIT :n"
    )
    if by_ctid:  # a TID scan: the cheapest way to delete a bounded set on PostgreSQL
        sql = f"DELETE FROM {target} WHERE ctid = ANY(ARRAY(SELECT ctid {victims}))"  # noqa: S608
    else:
        sql = (
            f"DELETE FROM {target} WHERE (series_id, {column}) IN "  # noqa: S608
            f"(SELECT series_id, {column} {victims})"
        )
    return text(sql).bindparams(bindparam("org", type_=Uuid()))


@asynccontextmanager
async def single_runner(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """On PostgreSQL, session advisory lock `key`; yields False when another process holds
    it (retention and compaction each run once at a time)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as connection:
        got = bool(
            (
                await connection.exec_driver_sql("SELECT pg_try_advisory_lock($1)", (key,))
            ).scalar_one()
        )
        await connection.commit()
        try:
            yield got
        finally:
            if got:
                await connection.exec_driver_sql("SELECT pg_advisory_unlock($1)", (key,))
                await connection.commit()


def register_jobs(
    jobs: JobScheduler,
    database: Database,
    settings: Settings,
    *,
    archived: ArchivedDays | None = None,
) -> None:
    """Retention every `retention_interval_s`; on PostgreSQL, partitions ahead once a day."""
    defaults = default_policy(settings)

    async def retention() -> None:
        await run_retention(
            database.engine,
            defaults=defaults,
            chunk_rows=settings.retention_chunk_rows,
            archived=archived,
        )

    async def partitions_ahead() -> None:
        await partitions.ensure_partitions(
            database.engine, days_ahead=settings.partitions_ahead_days
        )

    jobs.register("telemetry-retention", settings.retention_interval_s, retention)
    if database.dialect == "postgresql":
        jobs.register("telemetry-partitions", DAY_MS / 1000, partitions_ahead)
