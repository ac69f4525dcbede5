"""Accounting an audit into the database: Sale rows, slot stock, the machine's audit state.

Called with the machine row locked (audits.lock_machine), in the transaction that stores
or accepts the audit, so two audits of one machine are never accounted against the same
previous one.

Order: audits are accounted in read-time order. An audit older than the machine's latest
accounted one (a late upload, or a damaged one accepted afterwards) is accounted only when
its sales cannot overlap what is already counted: on since-reset counters after a read
that reset them (basis "reset"), its values are its own interval's. On counters since
initialisation the next audit's difference already covers its interval, so it is kept,
not accounted, with a LATE warning. A late audit never moves stock levels (they are older
than what is known).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.vending.accounting import BASELINE, RESET, Interval, compute_interval
from fleetcore.vending.attribution import Attribution, attribution_at
from fleetcore.vending.models import Audit, Machine, Sale, SlotStock
from fleetcore.vending.snapshot import MAX_COUNT
from fleetcore.vending.upsert import insert_or_ignore

LATE_WARNING = {
    "code": "LATE",
    "message": "older than the machine's latest accounted audit: its sales are within the "
    "next audit's interval, so it is kept but not accounted",
}


def _naive_utc(text: str | None) -> datetime | None:
    # DEX times carry no zone: taken as UTC, as the audit's read time is.
    return None if text is None else datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _accounted_before(
    session: AsyncSession, audit: Audit, *, strictly_before: bool
) -> Audit | None:
    query = select(Audit).where(Audit.device_id == audit.device_id, Audit.accounted.is_(True))
    if strictly_before:
        query = query.where(Audit.read_at < audit.read_at)
    return await session.scalar(query.order_by(Audit.read_at.desc(), Audit.id.desc()).limit(1))


async def account(session: AsyncSession, machine: Machine, audit: Audit) -> bool:
    """Account an accepted audit; False when it is kept unaccounted (late)."""
    latest = await _accounted_before(session, audit, strictly_before=False)
    late = latest is not None and latest.read_at > audit.read_at
    previous = await _accounted_before(session, audit, strictly_before=True) if late else latest
    interval = compute_interval(previous.summary if previous else None, audit.summary)
    if late and interval.basis != RESET:
        audit.warnings = [*audit.warnings, LATE_WARNING]
        return False
    period_start = previous.read_at if previous is not None else None
    if interval.basis != BASELINE:
        places = await attribution_at(session, machine.device_id, period_start)
        _add_sales(session, audit, interval, places, period_start, previous)
    current = await attribution_at(session, machine.device_id, None)
    soldout = (
        [] if late else await _update_stock(session, machine, audit, interval, current, previous)
    )
    audit.accounted = True
    audit.warnings = [*audit.warnings, *interval.warnings]
    audit.summary = {
        **audit.summary,
        "accounting": {
            "basis": interval.basis,
            "previous_audit_id": previous.id if previous else None,
            "period_start": period_start.isoformat() if period_start else None,
            "totals": interval.totals.as_json(),
            "soldout": soldout,
            "late": late,
        },
    }
    if machine.last_audit_at is None or audit.read_at > machine.last_audit_at:
        machine.last_audit_at = audit.read_at
        if audit.summary.get("currency"):
            machine.currency = audit.summary["currency"][:3]
    return True


def _add_sales(
    session: AsyncSession,
    audit: Audit,
    interval: Interval,
    places: Attribution,
    period_start: datetime | None,
    previous: Audit | None,
) -> None:
    for sold in interval.slots:
        place = places.place(sold.slot)
        session.add(
            Sale(
                organization_id=audit.organization_id,
                device_id=audit.device_id,
                audit_id=audit.id,
                previous_audit_id=previous.id if previous else None,
                cabinet_id=place.cabinet_id,
                slot=sold.slot,
                product_id=place.product_id,
                period_start=period_start,
                period_end=audit.read_at,
                basis=sold.basis,
                units=sold.units,
                revenue=sold.revenue,
                cash_units=sold.cash_units,
                cash_revenue=sold.cash_revenue,
                cashless_units=sold.cashless_units,
                cashless_revenue=sold.cashless_revenue,
                test_vends=sold.test_vends,
                free_vends=sold.free_vends,
            )
        )


async def _update_stock(
    session: AsyncSession,
    machine: Machine,
    audit: Audit,
    interval: Interval,
    places: Attribution,
    previous: Audit | None,
) -> list[str]:
    """Sold since fill, known levels (PA108), sold-out marks; returns the sold-out slots."""
    units = {s.slot: s.units for s in interval.slots}
    where = {
        slot: cabinet_id
        for slot in audit.summary["products"]
        if (cabinet_id := places.place(slot).cabinet_id) is not None
    }
    rows = await _stock_rows(session, machine, {(c, slot) for slot, c in where.items()})
    soldout: list[str] = []
    for slot, product in sorted(audit.summary["products"].items()):
        if slot not in where:
            continue
        stock = rows[(where[slot], slot)]
        stock.sold_since_fill = min(stock.sold_since_fill + units.get(slot, 0), MAX_COUNT)
        level: int | None = product.get("level")
        if level is not None:  # the machine counts its stock: that is the known level
            _mark_at_level(stock, level, product, audit, previous)
            stock.fill_level, stock.filled_at, stock.sold_since_fill = level, audit.read_at, 0
        else:
            _mark_sold_out(stock, product, audit, previous)
        if stock.sold_out_at is not None:
            soldout.append(slot)
    return soldout


def _mark_at_level(
    stock: SlotStock, level: int, product: dict[str, Any], audit: Audit, previous: Audit | None
) -> None:
    # Called before the level replaces the last fill: a PA5 time is news only when later
    # than both the previous read and the fill known until now (PA5 keeps the last
    # sell-out however old); otherwise the slot was already seen empty (keep that mark)
    # or it emptied unseen since (the read is the first time it is known empty).
    if level > 0:
        stock.sold_out_at = None
        return
    reported = _naive_utc(product.get("sold_out_at"))
    known = [t for t in (stock.filled_at, previous.read_at if previous else None) if t]
    if reported is not None and reported <= audit.read_at and all(reported > t for t in known):
        stock.sold_out_at = reported
    else:
        stock.sold_out_at = stock.sold_out_at or audit.read_at


def _mark_sold_out(
    stock: SlotStock, product: dict[str, Any], audit: Audit, previous: Audit | None
) -> None:
    # No level reported: the estimate from the last known fill and PA5 decide.
    estimate = None if stock.fill_level is None else stock.fill_level - stock.sold_since_fill
    reported = _naive_utc(product.get("sold_out_at"))
    # PA5 keeps the last time the slot sold out, however old. After a known fill it counts
    # only when later than the fill; with no fill known, when it is new since the previous
    # read or the one already marked (nothing refilled it since, as far as we know).
    if reported is not None:
        if stock.filled_at is not None:
            fresh = reported > stock.filled_at
        else:
            fresh = previous is None or reported > previous.read_at or stock.sold_out_at == reported
        if fresh:
            stock.sold_out_at = reported
            return
    if estimate is not None and estimate <= 0:
        stock.sold_out_at = stock.sold_out_at or audit.read_at
    elif estimate is not None and estimate > 0:
        stock.sold_out_at = None


async def _stock_rows(
    session: AsyncSession, machine: Machine, keys: set[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], SlotStock]:
    """The stock rows of these (cabinet, slot) keys, the missing ones created."""

    async def load() -> dict[tuple[uuid.UUID, str], SlotStock]:
        if not keys:
            return {}
        found = await session.scalars(
            select(SlotStock).where(
                SlotStock.cabinet_id.in_({c for c, _ in keys}),
                SlotStock.slot.in_({s for _, s in keys}),
            )
        )
        return {(r.cabinet_id, r.slot): r for r in found if (r.cabinet_id, r.slot) in keys}

    rows = await load()
    missing = keys - rows.keys()
    if missing:
        # A driver's fill may create one at the same moment: the database decides.
        await insert_or_ignore(
            session,
            SlotStock,
            [
                {
                    "cabinet_id": cabinet_id,
                    "slot": slot,
                    "organization_id": machine.organization_id,
                    "sold_since_fill": 0,
                }
                for cabinet_id, slot in sorted(missing)
            ],
        )
        rows = await load()
    return rows
