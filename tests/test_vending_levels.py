"""PA108: a machine that counts its stock reports each slot's level; that is the known level."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from sqlalchemy import select

from fleetcore.db import Database
from fleetcore.vending.models import Audit, SlotStock
from fleetcore_protocol.dex.model import Counter, SoldOut
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write
from tests.support.devices import new_device
from tests.support.tenants import Tenant

D = Decimal
T0 = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0, tzinfo=None)


def at(hours: float) -> datetime:
    """A read time `hours` after T0 (naive: DEX times have no zone)."""
    return T0 + timedelta(hours=hours)


def utc(hours: float) -> datetime:
    """The same read time as stored."""
    return at(hours).replace(tzinfo=UTC)


def dex(
    read_at: datetime,
    slots: dict[str, tuple[int, int | None]],
    *,
    mode: str | None = None,
    sold_out: SoldOut | None = None,
) -> bytes:
    """One audit: per slot (vends, PA108 level or None); vends since the last read with
    AUTO (counters reset at each read), else since initialisation."""

    def paid(vends: int) -> Counter:
        if mode == "AUTO":
            return Counter(value_reset=D("1.50") * vends, count_reset=vends)
        return Counter(value_init=D("1.50") * vends, count_init=vends)

    selections = [
        Selection(
            slot,
            D("1.50"),
            paid=paid(vends),
            current_level=level,
            sold_out=sold_out,
        )
        for slot, (vends, level) in slots.items()
    ]
    return write(
        MachineAudit(serial="SN-L", selections=selections, read_at=read_at, reset_mode=mode)  # type: ignore[arg-type]
    )


async def send(client: httpx.AsyncClient, token: str, raw: bytes) -> None:
    """POST the file as the device; stored."""
    response = await client.post(
        "/api/v1/devices/me/dex", headers={"X-Device-Token": token}, content=raw
    )
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 1, response.text


async def stock(db: Database) -> dict[str, SlotStock]:
    """Slot stock rows by slot (one machine per test)."""
    async with db.session() as session:
        return {s.slot: s for s in await session.scalars(select(SlotStock))}


async def test_a_reported_level_is_the_known_level(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": (10, 8), "A2": (4, None)}))
    first = await stock(db)
    assert (first["A1"].fill_level, first["A1"].sold_since_fill) == (8, 0)
    assert first["A1"].filled_at == utc(0)
    assert (first["A2"].fill_level, first["A2"].filled_at) == (None, None)  # no level: unknown

    # No level in the next read: sales count down from the known level.
    await send(client, token, dex(at(1), {"A1": (13, None), "A2": (6, None)}))
    between = await stock(db)
    assert (between["A1"].fill_level, between["A1"].sold_since_fill) == (8, 3)
    assert between["A1"].filled_at == utc(0)
    assert between["A2"].sold_since_fill == 2

    # A level again (a driver filled in between, unseen): it replaces the estimate.
    await send(client, token, dex(at(2), {"A1": (15, 11), "A2": (7, 5)}))
    after = await stock(db)
    assert (after["A1"].fill_level, after["A1"].sold_since_fill) == (11, 0)
    assert (after["A2"].fill_level, after["A2"].sold_since_fill) == (5, 0)
    assert after["A1"].filled_at == after["A2"].filled_at == utc(2)
    assert after["A1"].sold_out_at is None


async def test_level_zero_marks_the_slot_sold_out_and_a_level_clears_it(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": (10, 3), "A2": (5, 6)}))
    await send(client, token, dex(at(1), {"A1": (13, 0), "A2": (6, 5)}))
    sold_out = await stock(db)
    assert (sold_out["A1"].fill_level, sold_out["A1"].sold_since_fill) == (0, 0)
    assert sold_out["A1"].sold_out_at == utc(1)  # no PA5: the read that saw it empty
    assert sold_out["A2"].sold_out_at is None
    async with db.session() as session:
        latest = await session.scalar(select(Audit).order_by(Audit.read_at.desc()).limit(1))
    assert latest is not None
    assert latest.summary["accounting"]["soldout"] == ["A1"]

    # Still empty at the next read: the first time it was seen empty stays.
    await send(client, token, dex(at(2), {"A1": (13, 0), "A2": (6, 5)}))
    assert (await stock(db))["A1"].sold_out_at == utc(1)

    # Refilled (the machine counts it): no longer sold out.
    await send(client, token, dex(at(3), {"A1": (14, 9), "A2": (6, 5)}))
    refilled = await stock(db)
    assert (refilled["A1"].fill_level, refilled["A1"].sold_since_fill) == (9, 0)
    assert refilled["A1"].sold_out_at is None


async def test_a_pa5_time_wins_over_the_read_time_for_level_zero(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": (10, 3)}))
    emptied = SoldOut(date=at(0.5).date(), time=at(0.5).time())
    await send(client, token, dex(at(1), {"A1": (13, 0)}, sold_out=emptied))
    row = (await stock(db))["A1"]
    assert row.fill_level == 0
    assert row.sold_out_at == utc(0.5)  # when it sold out, not when it was read

    # Still empty, the same PA5: the mark stays.
    await send(client, token, dex(at(2), {"A1": (13, 0)}, sold_out=emptied))
    assert (await stock(db))["A1"].sold_out_at == utc(0.5)

    # Refilled, then empty again with a PA5 older than that fill (the machine never
    # updated it): the read is the first time it is known empty.
    await send(client, token, dex(at(3), {"A1": (13, 6)}, sold_out=emptied))
    assert (await stock(db))["A1"].sold_out_at is None
    await send(client, token, dex(at(4), {"A1": (19, 0)}, sold_out=emptied))
    assert (await stock(db))["A1"].sold_out_at == utc(4)


async def test_a_late_audit_never_moves_the_known_level(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": (10, 8)}, mode="AUTO"))
    await send(client, token, dex(at(2), {"A1": (3, 4)}, mode="AUTO"))
    # Uploaded afterwards, read before: its sales are its own (counters reset at each
    # read), so it is accounted; its level is older than the one known.
    await send(client, token, dex(at(1), {"A1": (1, 0)}, mode="AUTO"))
    async with db.session() as session:
        late = await session.scalar(select(Audit).where(Audit.read_at == utc(1)))
    assert late is not None
    assert late.accounted
    assert late.summary["accounting"]["late"] is True
    row = (await stock(db))["A1"]
    assert (row.fill_level, row.filled_at, row.sold_out_at) == (4, utc(2), None)
