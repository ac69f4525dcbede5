"""DEX audits in over HTTP, stored and accounted on both databases."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from fleetcore.audit.models import AuditEvent
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.devices.models import Device
from fleetcore.status.models import DeviceStatusChange
from fleetcore.vending.models import (
    Audit,
    Cabinet,
    Machine,
    Planogram,
    PlanogramSlot,
    Product,
    Route,
    RouteDriver,
    Sale,
    SlotStock,
)
from fleetcore_protocol.dex.model import Counter, SoldOut
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write
from tests.support.devices import new_device
from tests.support.rules import alerts_of, make_rule, settled
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

D = Decimal
DEVICE_DEX = "/api/v1/devices/me/dex"
CORPUS = Path(__file__).parent / "data" / "dex"
# Reads a few hours back, a whole second each (DEX times have no fraction).
T0 = (datetime.now(UTC) - timedelta(hours=6)).replace(microsecond=0, tzinfo=None)


def at(hours: float) -> datetime:
    """A read time `hours` after T0 (naive: DEX times have no zone)."""
    return T0 + timedelta(hours=hours)


def init(count: int, price: str = "1.50") -> Counter:
    """Counters since initialisation for `count` vends at `price`."""
    return Counter(value_init=D(price) * count, count_init=count)


def since_reset(count: int, price: str = "1.50") -> Counter:
    """Counters since reset only (as machines without initialisation counters send)."""
    return Counter(value_reset=D(price) * count, count_reset=count)


def dex(
    read_at: datetime,
    counts: dict[str, Counter],
    *,
    serial: str = "SN-1",
    mode: str | None = None,
    **selection: Any,
) -> bytes:
    """A well-formed one-audit file."""
    selections = [
        Selection(slot, D("1.50"), paid=counter, **selection) for slot, counter in counts.items()
    ]
    return write(
        MachineAudit(serial=serial, selections=selections, read_at=read_at, reset_mode=mode)  # type: ignore[arg-type]
    )


def damaged(raw: bytes) -> bytes:
    """The same file with its G85 CRC wrong (a transmission error)."""
    head, _, tail = raw.partition(b"G85*")
    crc, rest = tail[:4], tail[4:]
    return head + b"G85*" + (b"0000" if crc != b"0000" else b"FFFF") + rest


async def send(client: httpx.AsyncClient, token: str, raw: bytes, status: int = 200) -> Any:
    """POST the file as the device; the answer's JSON."""
    response = await client.post(
        DEVICE_DEX, headers={"X-Device-Token": token, "Content-Type": "text/plain"}, content=raw
    )
    assert response.status_code == status, response.text
    return response.json()


async def sales(
    client: httpx.AsyncClient, tenant: Tenant, device_id: str, group: str = "slot", **params: str
) -> dict[str | None, dict[str, Any]]:
    """GET .../sales as a viewer, by key."""
    response = await client.get(
        f"/api/v1/vending/machines/{device_id}/sales",
        headers=tenant.headers(Role.VIEWER),
        params={"group": group, **params},
    )
    assert response.status_code == 200, response.text
    return {row["key"]: row for row in response.json()["items"]}


async def audits_of(client: httpx.AsyncClient, tenant: Tenant, device_id: str) -> list[Any]:
    """GET .../audits, newest first."""
    response = await client.get(
        f"/api/v1/vending/machines/{device_id}/audits", headers=tenant.headers(Role.VIEWER)
    )
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def count(db: Database, model: type[Any]) -> int:
    """Rows of a table."""
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def units(rows: dict[str | None, dict[str, Any]]) -> dict[str | None, int]:
    """Units per key."""
    return {key: row["units"] for key, row in rows.items()}


# -- accounting through the API ------------------------------------------------------------


async def test_auto_reset_sequence(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device_id, token = await new_device(client, tenant)
    counts = [(5, 2), (3, 0), (4, 1)]  # sold since the previous read, A1 and A2
    for hour, (a1, a2) in enumerate(counts):
        files = {"A1": since_reset(a1), "A2": since_reset(a2)}
        answer = await send(client, token, dex(at(hour), files, mode="AUTO"))
        assert answer["stored"] == 1
        assert answer["audits"][0]["accounted"]
    # The first read is the baseline; each later one brings its own since-reset values.
    rows = await sales(client, tenant, device_id)
    assert units(rows) == {"A1": 7, "A2": 1}
    assert D(rows["A1"]["revenue"]) == D("10.50")
    days = await sales(client, tenant, device_id, group="day")
    assert set(days) <= {at(1).date().isoformat(), at(2).date().isoformat()}
    assert sum(units(days).values()) == 8
    later = await sales(client, tenant, device_id, since=at(1.5).isoformat() + "Z")
    assert units(later) == {"A1": 4, "A2": 1}
    # Newest read first, a page at a time.
    url = f"/api/v1/vending/machines/{device_id}/audits"
    first = (await client.get(url, headers=tenant.headers(), params={"limit": 2})).json()
    rest = await client.get(
        url, headers=tenant.headers(), params={"limit": 2, "cursor": first["next_cursor"]}
    )
    read_times = [a["read_at"] for a in first["items"] + rest.json()["items"]]
    assert len(read_times) == 3
    assert read_times == sorted(read_times, reverse=True)
    assert rest.json()["next_cursor"] is None
    newest = (await audits_of(client, tenant, device_id))[0]
    detail = await client.get(
        f"/api/v1/vending/audits/{newest['id']}", headers=tenant.headers(Role.VIEWER)
    )
    assert detail.json()["summary"]["accounting"]["basis"] == "reset"


async def test_save_sequence_takes_differences(client: httpx.AsyncClient, tenant: Tenant) -> None:
    device_id, token = await new_device(client, tenant)
    for hour, n in enumerate([4, 9, 12]):  # SAVE: since-reset counters accumulate
        await send(client, token, dex(at(hour), {"A1": since_reset(n)}, mode="SAVE"))
    assert units(await sales(client, tenant, device_id)) == {"A1": 8}


async def test_reinitialisation_counts_from_zero_and_warns(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(100)}))
    await send(client, token, dex(at(1), {"A1": init(104)}))
    answer = await send(client, token, dex(at(2), {"A1": init(3)}))  # re-initialised
    assert "REINITIALISED" in {w["code"] for w in answer["audits"][0]["warnings"]}
    assert units(await sales(client, tenant, device_id)) == {"A1": 4 + 3}


async def test_a_gap_is_covered_by_the_next_audit(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10)}))
    await send(client, token, dex(at(3), {"A1": init(25)}))  # the reads at 1 and 2 are lost
    async with db.session() as session:
        (sale,) = (await session.scalars(select(Sale))).all()
    assert (sale.units, sale.revenue, sale.basis) == (15, D("22.50"), "init")
    assert sale.period_start == at(0).replace(tzinfo=UTC)
    assert sale.period_end == at(3).replace(tzinfo=UTC)


async def test_the_same_file_twice_is_stored_once(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10)}))
    raw = dex(at(1), {"A1": init(12)})
    first, again = await send(client, token, raw), await send(client, token, raw)
    assert (first["stored"], first["duplicates"]) == (1, 0)
    assert (again["stored"], again["duplicates"]) == (0, 1)
    assert again["audits"][0]["id"] == first["audits"][0]["id"]
    assert await count(db, Audit) == 2
    assert units(await sales(client, tenant, device_id)) == {"A1": 2}


async def test_a_read_from_another_machine_is_foreign_and_never_accounted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10)}, serial="SN-1"))  # learns SN-1
    answer = await send(client, token, dex(at(1), {"A1": init(50)}, serial="SN-OTHER"))
    outcome = answer["audits"][0]
    assert (outcome["status"], outcome["accounted"]) == ("foreign", False)
    assert "FOREIGN_SERIAL" in {w["code"] for w in outcome["warnings"]}
    await send(client, token, dex(at(2), {"A1": init(13)}, serial="SN-1"))
    assert units(await sales(client, tenant, device_id)) == {"A1": 3}
    rejected = await client.post(
        f"/api/v1/vending/audits/{outcome['id']}/reject", headers=tenant.headers(Role.MANAGER)
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"


async def test_a_damaged_audit_is_held_until_a_manager_accepts_it(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10)}))
    held = (await send(client, token, damaged(dex(at(1), {"A1": init(14)}))))["audits"][0]
    assert (held["status"], held["accounted"]) == ("damaged", False)
    assert "CRC_MISMATCH" in {w["code"] for w in held["warnings"]}
    assert await sales(client, tenant, device_id) == {}
    accept = f"/api/v1/vending/audits/{held['id']}/accept"
    for role in (Role.VIEWER, Role.OPERATOR, Role.DRIVER):
        refused = await client.post(accept, headers=tenant.headers(role))
        assert refused.status_code == 403, (role, refused.text)
    accepted = await client.post(accept, headers=tenant.headers(Role.MANAGER))
    assert accepted.status_code == 200, accepted.text
    assert (accepted.json()["status"], accepted.json()["accounted"]) == ("accepted", True)
    assert units(await sales(client, tenant, device_id)) == {"A1": 4}
    again = await client.post(accept, headers=tenant.headers(Role.MANAGER))
    assert again.status_code == 409
    async with db.session() as session:
        actions = set(await session.scalars(select(AuditEvent.action)))
    assert "vending.audit.accept" in actions


async def test_a_damaged_audit_accepted_after_a_later_one_is_kept_late(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10)}))
    held = (await send(client, token, damaged(dex(at(1), {"A1": init(14)}))))["audits"][0]
    await send(client, token, dex(at(2), {"A1": init(20)}))  # covers the held one's interval
    accepted = await client.post(
        f"/api/v1/vending/audits/{held['id']}/accept", headers=tenant.headers(Role.MANAGER)
    )
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert (body["status"], body["accounted"]) == ("accepted", False)
    assert "LATE" in {w["code"] for w in body["warnings"]}
    assert units(await sales(client, tenant, device_id)) == {"A1": 10}


async def _planogram(
    db: Database, device_id: str, org_id: uuid.UUID, version: int, since: datetime, product: Any
) -> None:
    async with db.session(write=True) as session:
        cabinet = await session.scalar(
            select(Cabinet).where(Cabinet.device_id == uuid.UUID(device_id))
        )
        assert cabinet is not None
        planogram = Planogram(
            organization_id=org_id,
            cabinet_id=cabinet.id,
            version=version,
            effective_from=since.replace(tzinfo=UTC),
        )
        session.add(planogram)
        await session.flush()
        session.add(
            PlanogramSlot(
                planogram_id=planogram.id,
                slot="A1",
                product_id=product,
                capacity=10,
                par_level=8,
                price=D("1.50"),
            )
        )
        await session.commit()


async def test_sales_stay_with_the_product_the_slot_had_at_the_start(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    async with db.session(write=True) as session:
        cola, water = (
            Product(organization_id=tenant.org_id, name=name, sku=f"{name}-{uuid.uuid4().hex}")
            for name in ("cola", "water")
        )
        session.add_all([cola, water])
        await session.commit()
    await send(client, token, dex(at(0), {"A1": init(10), "Z9": init(1)}))
    await _planogram(db, device_id, tenant.org_id, 1, at(-24), cola.id)
    # At the service visit just before the next read, the slot gets water.
    await _planogram(db, device_id, tenant.org_id, 2, at(0.9), water.id)
    await send(client, token, dex(at(1), {"A1": init(16), "Z9": init(2)}))
    await send(client, token, dex(at(2), {"A1": init(19), "Z9": init(2)}))
    by_product = units(await sales(client, tenant, device_id, group="product"))
    # Z9 is in no planogram: no product (the machine's first cabinet).
    assert by_product == {str(cola.id): 6, str(water.id): 3, None: 1}
    async with db.session() as session:
        cabinets = set(await session.scalars(select(Sale.cabinet_id)))
    assert len(cabinets) == 1
    assert None not in cabinets


async def test_stock_counts_sales_since_the_fill_and_marks_sold_out(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(10), "A2": init(0)}))
    async with db.session(write=True) as session:
        await session.execute(
            update(SlotStock).values(fill_level=5, filled_at=at(0.5).replace(tzinfo=UTC))
        )
        await session.commit()
    sold_out = SoldOut(date=at(1.5).date(), time=at(1.5).time())
    await send(client, token, dex(at(2), {"A1": init(12)}))
    await send(client, token, dex(at(2.5), {"A2": init(1)}, sold_out=sold_out))
    async with db.session() as session:
        stock = {s.slot: s for s in await session.scalars(select(SlotStock))}
        machine = await session.get(Machine, uuid.UUID(device_id))
    assert stock["A1"].sold_since_fill == 2
    assert stock["A1"].sold_out_at is None
    assert stock["A2"].sold_out_at == at(1.5).replace(tzinfo=UTC)  # PA5, after the fill
    assert machine is not None
    assert machine.last_audit_at == at(2.5).replace(tzinfo=UTC)
    assert (machine.currency, machine.dex_serial) == ("EUR", "SN-1")


# -- refusals, limits, roles ---------------------------------------------------------------


async def test_a_file_that_is_not_dex_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    for body in (b"", b"hello, world", b'{"temperature": 21}', bytes(range(256))):
        answer = await send(client, token, body, status=422)
        assert answer["error"]["code"] == "DEX_INVALID"
    too_big = b"DXS*1*VA*V0/6*1\r\n" + b"X" * (1024 * 1024)
    refused = await client.post(DEVICE_DEX, headers={"X-Device-Token": token}, content=too_big)
    assert refused.status_code == 413
    assert "error" in refused.json()
    assert await count(db, Audit) == 0
    assert await count(db, Machine) == 0


async def test_absurd_counters_are_left_out_with_a_warning(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(1), "A2": init(1)}))
    huge = Counter(value_init=D(10) ** 16, count_init=10**16)
    answer = await send(client, token, dex(at(1), {"A1": huge, "A2": init(3)}))
    (outcome,) = answer["audits"]
    assert outcome["accounted"]
    assert "OUT_OF_RANGE" in {w["code"] for w in outcome["warnings"]}
    assert units(await sales(client, tenant, device_id)) == {"A1": 0, "A2": 2}


async def test_long_and_odd_selection_codes_are_stored(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    _, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(1)}))
    # Two codes alike in their first 16 characters; a NUL inside (the parser shows U+FFFD).
    odd = (
        b"DXS*X*VA*V0/6*1\r\nST*001*0001\r\nID1*SN-1\r\n"
        b"PA1*ABCDEFGHIJKLMNOPQRSTUVWXYZ0123\x00*150*Co\x00la\r\nPA2*1*150\r\n"
        b"PA1*ABCDEFGHIJKLMNOPQRSTUVWXYZ0124*150\r\nPA2*2*300\r\nSE*6*0001\r\nDXE*1*1\r\n"
    )
    (outcome,) = (await send(client, token, odd))["audits"]
    assert outcome["accounted"]
    assert "OUT_OF_RANGE" in {w["code"] for w in outcome["warnings"]}
    async with db.session() as session:
        sold = {s.slot: s.units for s in await session.scalars(select(Sale))}
    assert sold == {"ABCDEFGHIJKLMNOP": 1}  # the first of the two; new, so from zero


async def test_handheld_upload_roles_and_driver_scope(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    device_id, _ = await new_device(client, tenant)
    url = f"/api/v1/devices/{device_id}/dex"

    def upload(raw: bytes) -> dict[str, Any]:
        return {"files": {"file": ("handheld.dex", raw, "application/octet-stream")}}

    viewer = await client.post(url, headers=tenant.headers(Role.VIEWER), **upload(b"x"))
    assert viewer.status_code == 403
    stranger = await client.post(url, headers=other_tenant.headers(), **upload(b"x"))
    assert stranger.status_code == 404
    raw = dex(at(0), {"A1": init(10)})
    stored = await client.post(url, headers=tenant.headers(Role.OPERATOR), **upload(raw))
    assert stored.status_code == 200, stored.text
    assert stored.json()["stored"] == 1
    (audit,) = await audits_of(client, tenant, device_id)
    assert (audit["source"], audit["uploaded_by"]) == (
        "upload",
        str(tenant.user_ids[Role.OPERATOR]),
    )
    raw_file = await client.get(
        f"/api/v1/vending/audits/{audit['id']}/raw", headers=tenant.headers(Role.VIEWER)
    )
    assert raw_file.content == raw
    # A driver sees and reads only the machines of their routes.
    driver = tenant.headers(Role.DRIVER)
    audits_url = f"/api/v1/vending/machines/{device_id}/audits"
    assert (await client.get(audits_url, headers=driver)).status_code == 404
    second = dex(at(1), {"A1": init(12)})
    assert (await client.post(url, headers=driver, **upload(second))).status_code == 404
    async with db.session(write=True) as session:
        route = Route(organization_id=tenant.org_id, name=f"route {time.monotonic_ns()}")
        session.add(route)
        await session.flush()
        session.add(RouteDriver(route_id=route.id, user_id=tenant.user_ids[Role.DRIVER]))
        await session.execute(
            update(Machine)
            .where(Machine.device_id == uuid.UUID(device_id))
            .values(route_id=route.id)
        )
        await session.commit()
    assert (await client.get(audits_url, headers=driver)).status_code == 200
    by_driver = await client.post(url, headers=driver, **upload(second))
    assert by_driver.status_code == 200, by_driver.text
    assert units(await sales(client, tenant, device_id)) == {"A1": 2}
    detail = await client.get(f"/api/v1/vending/audits/{audit['id']}", headers=driver)
    assert detail.status_code == 200
    async with db.session() as session:
        uploads = await session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "vending.audit.upload")
        )
    assert uploads == 2


async def test_bad_ids_and_cursors_are_answered_with_the_envelope(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant)
    await send(client, token, dex(at(0), {"A1": init(1)}))
    for path in ("/api/v1/vending/audits/99999999999999999999999", "/api/v1/vending/audits/0"):
        response = await client.get(path, headers=tenant.headers())
        assert response.status_code == 404, path
    bad = await client.get(
        f"/api/v1/vending/machines/{device_id}/audits",
        headers=tenant.headers(),
        params={"cursor": "WyJ2IiwxXQ"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "INVALID_CURSOR"


async def test_real_files_are_stored_with_their_warnings(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in sorted(CORPUS.iterdir()):
        if path.suffix not in (".dex", ".eva_dts", ".eva"):
            continue
        device_id, token = await new_device(client, tenant)
        answer = await send(client, token, path.read_bytes())
        assert answer["stored"] >= 1, path.name
        for outcome in answer["audits"]:
            assert outcome["status"] in ("accepted", "damaged"), path.name
        assert await audits_of(client, tenant, device_id)


async def test_mangled_real_files_are_stored_or_refused_never_a_500(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    chance = random.Random(15)
    _, token = await new_device(client, tenant)
    for path in sorted(CORPUS.iterdir()):
        if path.suffix not in (".dex", ".eva_dts", ".eva"):
            continue
        data = path.read_bytes()
        lines = data.splitlines(keepends=True)
        cut = chance.randrange(len(lines))
        flip = chance.randrange(len(data))
        for mangled in (
            data[: len(data) // 2],
            data[:flip] + bytes([data[flip] ^ 0x5A]) + data[flip + 1 :],
            b"".join(lines[:cut] + lines[cut + 1 :]),
        ):
            response = await client.post(
                DEVICE_DEX, headers={"X-Device-Token": token}, content=mangled
            )
            assert response.status_code in (200, 422), (path.name, response.text)


# -- live: concurrency and the telemetry series ---------------------------------------------


async def test_two_concurrent_uploads_of_one_file_store_it_once(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    _, token = await new_device(live_client, live_tenant)
    raw = dex(at(0), {"A1": init(10)})
    answers = await asyncio.gather(*(send(live_client, token, raw) for _ in range(2)))
    assert sorted(a["stored"] for a in answers) == [0, 1]
    assert sorted(a["duplicates"] for a in answers) == [0, 1]
    assert await count(live_database, Audit) == 1
    assert await count(live_database, Machine) == 1
    assert await count(live_database, Cabinet) == 1


async def test_sales_become_telemetry_that_rules_and_queries_see(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client,
        live_tenant,
        device_id=device_id,
        condition={"key": "vend_units", "op": ">", "value": 4},
    )
    await send(live_client, token, dex(at(0), {"A 1": init(10), "B2": init(3)}))
    await send(live_client, token, dex(at(1), {"A 1": init(14), "B2": init(4)}))
    latest = await live_client.get(
        f"/api/v1/devices/{device_id}/telemetry/latest", headers=live_tenant.headers()
    )
    assert latest.status_code == 200, latest.text
    values = {k: v["value"] for k, v in latest.json()["values"].items()}
    assert values["vend_units"] == 5
    assert values["vend_revenue"] == 7.5
    assert (values["sales.A_1"], values["sales.B2"]) == (4, 1)
    assert (values["soldout.A_1"], values["soldout_slots"]) == (0, 0)
    await settled(live_app)

    async def alert_open() -> bool:
        return len(await alerts_of(live_client, live_tenant, device_id=device_id)) == 1

    await wait_until(alert_open)


async def test_a_dex_upload_is_device_traffic(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id, token = await new_device(live_client, live_tenant)
    await send(live_client, token, dex(at(0), {"A1": init(10)}))  # the token's first use
    long_ago = datetime.now(UTC) - timedelta(days=1)
    async with live_database.session(write=True) as session:
        await session.execute(
            update(Device).where(Device.id == uuid.UUID(device_id)).values(last_seen_at=long_ago)
        )
        await session.commit()
    await send(live_client, token, dex(at(1), {"A1": init(12)}))

    async def online() -> bool:
        response = await live_client.get(
            f"/api/v1/devices/{device_id}", headers=live_tenant.headers()
        )
        return bool(response.json()["connectivity"] == "online")

    await wait_until(online)
    await live_app.state.presence.sweep()  # writes the last-seen times noted
    async with live_database.session() as session:
        device = await session.get(Device, uuid.UUID(device_id))
        changes = (
            await session.scalars(
                select(DeviceStatusChange.reason).where(
                    DeviceStatusChange.device_id == uuid.UUID(device_id)
                )
            )
        ).all()
    assert device is not None
    assert device.last_seen_at is not None
    assert device.last_seen_at > long_ago
    assert changes == ["traffic"]


async def test_test_and_free_vends_are_series_of_each_interval(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id, token = await new_device(live_client, live_tenant)

    def read(hours: float, slots: dict[str, tuple[int, int, int]]) -> bytes:
        """Per slot: (paid, test, free) vends since initialisation."""
        selections = [
            Selection(
                slot,
                D("1.50"),
                paid=init(paid),
                test=Counter(count_init=test),
                free=Counter(count_init=free),
            )
            for slot, (paid, test, free) in slots.items()
        ]
        return write(MachineAudit(serial="SN-1", selections=selections, read_at=at(hours)))

    async def latest() -> dict[str, Any]:
        response = await live_client.get(
            f"/api/v1/devices/{device_id}/telemetry/latest", headers=live_tenant.headers()
        )
        assert response.status_code == 200, response.text
        return {k: v["value"] for k, v in response.json()["values"].items()}

    await send(live_client, token, read(0, {"A1": (10, 2, 1), "A2": (3, 0, 0)}))
    baseline = await latest()
    assert "soldout_slots" in baseline
    assert "vend_test" not in baseline  # the first read has no interval
    await send(live_client, token, read(1, {"A1": (12, 5, 1), "A2": (4, 1, 3)}))
    values = await latest()
    assert (values["vend_units"], values["vend_test"], values["vend_free"]) == (3, 4, 3)
