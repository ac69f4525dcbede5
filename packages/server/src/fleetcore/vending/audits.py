"""DEX audits in: parse, store one row per ST set, account, then write the telemetry series.

- The same file twice is stored once: (device, SHA-256 of the file, set index) is unique
  and each set is inserted with ON CONFLICT DO NOTHING, so of two concurrent uploads the
  database stores one and the other is told "duplicate", not an error.
- A file with nothing DEX in it is refused whole (422 DEX_INVALID) and nothing is stored.
- A damaged set (CRC mismatch, truncated: Audit.damaged) is stored "damaged" and kept out
  of accounting until a manager accepts it; a set whose ID101 serial is not the machine's
  (dex_serial, learnt from the first accepted audit) is stored "foreign" and never
  accounted.
- The machine row is locked (PostgreSQL: FOR UPDATE; SQLite: the write transaction) while
  its audits are stored and accounted, so two audits are never accounted against the same
  previous one.
- Telemetry (vending.series) is written after the commit and awaited: the answer means
  the audit and its readings are durable. If that write fails the caller gets the error
  (503) though the audit is stored; the device's retry is a duplicate, whose series are
  written again.
- Read time: EA3 (else ID5), taken as UTC (DEX times carry no zone); none, or more than
  10 minutes ahead of the server, gives the time received (CLOCK_AHEAD warning).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from fleetcore.audit import service as audit_log
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import utcnow
from fleetcore.devices import service as devices
from fleetcore.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from fleetcore.pagination import page_of, paginate
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.vending import ledger
from fleetcore.vending.machines import ensure_machine
from fleetcore.vending.models import Audit, Machine, Sale
from fleetcore.vending.scope import get_machine, machine_visible
from fleetcore.vending.series import write_series
from fleetcore.vending.snapshot import snapshot, warning_json
from fleetcore_protocol.dex import parse
from fleetcore_protocol.dex.model import Audit as DexAudit
from fleetcore_protocol.dex.model import DexFile

MAX_DEX_BYTES = 1024 * 1024
ACCEPTED, DAMAGED, FOREIGN, REJECTED = "accepted", "damaged", "foreign", "rejected"
_MAX_ID = 2**63 - 1
_CLOCK_SLACK = timedelta(minutes=10)

Published = list[tuple[Audit, list[Sale]]]


@dataclass(slots=True)
class AuditOutcome:
    """What became of one ST set of an upload."""

    id: int
    set_index: int
    status: str
    accounted: bool
    duplicate: bool
    warnings: list[dict[str, Any]]


@dataclass(slots=True)
class IngestResult:
    """An upload's answer: each set's outcome, and the file's own warnings."""

    audits: list[AuditOutcome] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    published: Published = field(default_factory=list)

    @property
    def stored(self) -> int:
        """Sets stored by this upload."""
        return sum(not a.duplicate for a in self.audits)

    @property
    def duplicates(self) -> int:
        """Sets already stored by an earlier upload of the same file."""
        return sum(a.duplicate for a in self.audits)


async def lock_machine(session: AsyncSession, device_id: uuid.UUID) -> Machine:
    """The machine row, locked until commit (PostgreSQL; SQLite's writer holds the file)."""
    machine = await session.scalar(
        select(Machine)
        .where(Machine.device_id == device_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if machine is None:  # pragma: no cover - ensure_machine ran in this transaction
        raise NotFound("vending machine not found", code="MACHINE_NOT_FOUND")
    return machine


def _read_file(raw: bytes) -> tuple[DexFile, list[dict[str, Any]]]:
    parsed = parse(raw)
    return parsed, [snapshot(audit) for audit in parsed.audits]


def _read_time(dex: DexAudit, received: datetime) -> tuple[datetime, list[dict[str, Any]]]:
    read = dex.read_time
    if read is None:
        return received, []
    read = read.replace(tzinfo=UTC) if read.tzinfo is None else read.astimezone(UTC)
    if read > received + _CLOCK_SLACK:
        warning = {
            "code": "CLOCK_AHEAD",
            "message": f"the machine's read time {read.isoformat()} is in the future; "
            "the time received is used",
        }
        return received, [warning]
    return read, []


def _status(machine: Machine, serial: str | None, damaged: bool) -> str:
    if serial and machine.dex_serial and serial != machine.dex_serial:
        return FOREIGN
    return DAMAGED if damaged else ACCEPTED


def _foreign_warning(serial: str | None, expected: str | None) -> dict[str, Any]:
    return {
        "code": "FOREIGN_SERIAL",
        "message": f"ID101 serial {serial!r} is not this machine's ({expected!r}): "
        "a read from another machine, never accounted",
    }


async def _insert(session: AsyncSession, values: dict[str, Any]) -> int | None:
    # The unique (device_id, content_hash, set_index) decides between concurrent uploads.
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(Audit)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["device_id", "content_hash", "set_index"])
        .returning(Audit.id)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def _sales_of(session: AsyncSession, audit: Audit) -> list[Sale]:
    rows = await session.scalars(select(Sale).where(Sale.audit_id == audit.id).order_by(Sale.slot))
    return list(rows)


async def ingest_dex(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    device_id: uuid.UUID,
    raw: bytes,
    source: str,
    uploaded_by: uuid.UUID | None = None,
    actor: Principal | None = None,
    pipeline: IngestPipeline | None = None,
) -> IngestResult:
    """Store and account a DEX file of a device of `organization_id`; commits, then writes
    the telemetry series through `pipeline` (None: none) and waits for them."""
    if len(raw) > MAX_DEX_BYTES:
        raise PayloadTooLarge(f"a DEX file is at most {MAX_DEX_BYTES} bytes", code="DEX_TOO_LARGE")
    # Pure and CPU-bound (a 300 KB file is a fifth of a second): off the event loop, which
    # the MQTT broker and every request share.
    parsed, summaries = await asyncio.to_thread(_read_file, raw)
    if not parsed.is_dex or not parsed.audits:
        raise Invalid(
            "the file is not a DEX/EVA-DTS audit",
            code="DEX_INVALID",
            details={"warnings": [warning_json(w) for w in parsed.all_warnings[:20]]},
        )
    await ensure_machine(session, organization_id=organization_id, device_id=device_id)
    machine = await lock_machine(session, device_id)
    content_hash = hashlib.sha256(raw).hexdigest()
    received = utcnow()
    result = IngestResult(warnings=[warning_json(w) for w in parsed.warnings])
    for index, dex in enumerate(parsed.audits):
        outcome = await _store_set(
            session,
            machine,
            dex,
            summaries[index],
            index,
            raw,
            content_hash,
            received,
            source,
            uploaded_by,
        )
        result.audits.append(outcome)
    for outcome in result.audits:
        row = await session.get(Audit, outcome.id)
        if row is not None and row.accounted:
            result.published.append((row, await _sales_of(session, row)))
    if actor is not None:
        audit_log.record(
            session,
            action="vending.audit.upload",
            actor=actor,
            organization_id=organization_id,
            target_type="device",
            target_id=device_id,
            details={
                "sha256": content_hash,
                "audits": [{"id": a.id, "status": a.status} for a in result.audits],
                "duplicates": result.duplicates,
            },
        )
    await session.commit()
    await session.close()  # release the connection before waiting on the telemetry writer
    await write_series(pipeline, result.published)
    return result


async def _store_set(
    session: AsyncSession,
    machine: Machine,
    dex: DexAudit,
    summary: dict[str, Any],
    index: int,
    raw: bytes,
    content_hash: str,
    received: datetime,
    source: str,
    uploaded_by: uuid.UUID | None,
) -> AuditOutcome:
    read_at, warnings = _read_time(dex, received)
    warnings = [warning_json(w) for w in dex.warnings] + warnings
    serial = (dex.machine.serial or "").strip()[:64] or None
    status = _status(machine, serial, dex.damaged)
    if status == FOREIGN:
        warnings.append(_foreign_warning(serial, machine.dex_serial))
    if summary["out_of_range"]:
        warnings.append(
            {
                "code": "OUT_OF_RANGE",
                "message": "values beyond any real machine's were left out: "
                + ", ".join(summary["out_of_range"][:20]),
            }
        )
    audit_id = await _insert(
        session,
        {
            "organization_id": machine.organization_id,
            "device_id": machine.device_id,
            "content_hash": content_hash,
            "set_index": index,
            "source": source,
            "uploaded_by": uploaded_by,
            "received_at": received,
            "read_at": read_at,
            "machine_serial": serial,
            "status": status,
            "warnings": warnings,
            "summary": summary,
            "raw": raw,
            "accounted": False,
        },
    )
    if audit_id is None:
        existing = await session.scalar(
            select(Audit).where(
                Audit.device_id == machine.device_id,
                Audit.content_hash == content_hash,
                Audit.set_index == index,
            )
        )
        assert existing is not None
        return AuditOutcome(
            existing.id, index, existing.status, existing.accounted, True, existing.warnings
        )
    row = await session.get(Audit, audit_id)
    assert row is not None
    if status == ACCEPTED:
        if machine.dex_serial is None and serial is not None:
            machine.dex_serial = serial
        await ledger.account(session, machine, row)
    await session.flush()
    return AuditOutcome(row.id, index, row.status, row.accounted, False, row.warnings)


async def upload_dex(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    raw: bytes,
    *,
    pipeline: IngestPipeline | None,
) -> IngestResult:
    """A file pulled with a handheld: operators and above, or a driver for their machines."""
    if principal.is_driver:
        await get_machine(session, principal, device_id)
    else:
        principal.require(Role.OPERATOR)
        await devices.get_device(session, principal, device_id)
    return await ingest_dex(
        session,
        organization_id=principal.org_id,
        device_id=device_id,
        raw=raw,
        source="upload",
        uploaded_by=principal.user_id,
        actor=principal,
        pipeline=pipeline,
    )


async def get_audit(session: AsyncSession, principal: Principal, audit_id: int) -> Audit:
    """An audit of a machine the caller may see, or 404."""
    if not 0 < audit_id <= _MAX_ID:
        raise NotFound("audit not found", code="AUDIT_NOT_FOUND")
    audit = await session.scalar(
        select(Audit)
        .join(Machine, Machine.device_id == Audit.device_id)
        .where(Audit.id == audit_id, machine_visible(principal))
    )
    if audit is None:
        raise NotFound("audit not found", code="AUDIT_NOT_FOUND")
    return audit


async def review_audit(
    session: AsyncSession,
    principal: Principal,
    audit_id: int,
    *,
    accept: bool,
    pipeline: IngestPipeline | None,
) -> Audit:
    """Accept a damaged audit (it is accounted) or reject a damaged or foreign one."""
    principal.require(Role.MANAGER)
    found = await get_audit(session, principal, audit_id)
    machine = await lock_machine(session, found.device_id)
    # Read again under the lock: a concurrent review may have changed it meanwhile.
    audit = await session.scalar(
        select(Audit).where(Audit.id == found.id).execution_options(populate_existing=True)
    )
    assert audit is not None
    allowed = (DAMAGED,) if accept else (DAMAGED, FOREIGN)
    if audit.status not in allowed:
        raise Conflict(
            f"the audit is {audit.status}; only {' or '.join(allowed)} audits can be "
            f"{'accepted' if accept else 'rejected'}",
            code="AUDIT_NOT_REVIEWABLE",
        )
    if accept and _status(machine, audit.machine_serial, False) == FOREIGN:
        raise Conflict(
            "the audit's serial is another machine's: reject it instead",
            code="AUDIT_FOREIGN",
        )
    audit.status = ACCEPTED if accept else REJECTED
    audit.reviewed_by, audit.reviewed_at = principal.user_id or principal.subject_id, utcnow()
    if accept:
        if machine.dex_serial is None and audit.machine_serial:
            machine.dex_serial = audit.machine_serial
        await ledger.account(session, machine, audit)
    audit_log.record(
        session,
        action=f"vending.audit.{'accept' if accept else 'reject'}",
        actor=principal,
        organization_id=audit.organization_id,
        target_type="vending_audit",
        target_id=audit.id,
        details={"device_id": str(audit.device_id), "accounted": audit.accounted},
    )
    await session.flush()
    published: Published = [(audit, await _sales_of(session, audit))] if audit.accounted else []
    await session.commit()
    await session.close()
    await write_series(pipeline, published)
    return audit


async def list_audits(
    session: AsyncSession,
    principal: Principal,
    device_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Audit], str | None]:
    """A machine's audits, newest read first."""
    # Built before the machine is looked up: a bad cursor answers 422 whatever the machine.
    query = paginate(
        select(Audit).where(Audit.device_id == device_id).options(defer(Audit.raw)),
        sort=Audit.read_at,
        id_column=Audit.id,
        cursor=cursor,
        limit=limit,
        descending=True,
    )
    await get_machine(session, principal, device_id)
    rows = list(await session.scalars(query))
    return page_of(rows, limit=limit, sort_attr="read_at")
