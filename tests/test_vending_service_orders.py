"""Service orders: the need computation (pure), creation in one transaction, the state
machine (concurrent changes have one winner), the driver's fills and cash, completion."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fleetcore.auth.principal import Principal, PrincipalKind, Role
from fleetcore.db import Database
from fleetcore.errors import Conflict
from fleetcore.vending import picklist
from fleetcore.vending.models import PickLine, ServiceOrder, ServiceVisit, SlotStock
from fleetcore.vending.picklist import Need, need
from fleetcore.vending.service_orders import plan_route, store_order
from tests.support.tenants import Tenant
from tests.support.vending_service import (
    Slot,
    VendingMachine,
    audit_of,
    make_order,
    make_route,
    move,
    vending_machine,
)

ORDERS = "/api/v1/vending/service-orders"


# -- the need of a slot (pure) ---------------------------------------------------------------


def test_need_is_par_minus_stock_never_negative() -> None:
    assert need(capacity=10, par_level=8, stock=3, case_size=None) == Need(5, True)
    assert need(capacity=10, par_level=8, stock=8, case_size=None) == Need(0, True)
    assert need(capacity=10, par_level=8, stock=9, case_size=None) == Need(0, True)
    assert need(capacity=10, par_level=8, stock=0, case_size=1) == Need(8, True)


def test_need_never_exceeds_what_fits() -> None:
    # A par above capacity (a planogram mistake) still fills only what fits.
    assert need(capacity=10, par_level=12, stock=4, case_size=None) == Need(6, True)
    # An estimate above capacity (sales missed) fits nothing.
    assert need(capacity=10, par_level=8, stock=14, case_size=None) == Need(0, True)
    assert need(capacity=0, par_level=8, stock=0, case_size=None) == Need(0, True)


def test_need_rounds_up_to_whole_cases_unless_a_case_would_not_fit() -> None:
    assert need(capacity=20, par_level=10, stock=5, case_size=6) == Need(6, True)
    assert need(capacity=20, par_level=10, stock=3, case_size=6) == Need(12, True)
    assert need(capacity=20, par_level=12, stock=0, case_size=6) == Need(12, True)
    # 5 needed, a case is 6, 7 fit: one case.
    assert need(capacity=10, par_level=8, stock=3, case_size=6) == Need(6, True)
    # 5 needed, a case is 6, only 5 fit: what fits, the rest of the case goes back.
    assert need(capacity=8, par_level=8, stock=3, case_size=6) == Need(5, True)
    # 7 needed, two cases (12) would not fit in 9: what fits.
    assert need(capacity=10, par_level=8, stock=1, case_size=6) == Need(9, True)
    assert need(capacity=10, par_level=8, stock=8, case_size=6) == Need(0, True)


def test_unknown_stock_is_planned_to_par_and_marked() -> None:
    assert need(capacity=10, par_level=8, stock=None, case_size=6) == Need(8, False)
    assert need(capacity=5, par_level=8, stock=None, case_size=None) == Need(5, False)


def test_cases_totals_and_level_after_a_fill() -> None:
    assert picklist.cases(13, 6) == 3
    assert picklist.cases(12, 6) == 2
    assert picklist.cases(0, 6) == 0
    assert picklist.cases(5, None) is None
    assert picklist.level_after_fill(stock_before=3, filled=5, sold_out=False, capacity=10) == 8
    assert picklist.level_after_fill(stock_before=3, filled=9, sold_out=False, capacity=10) == 10
    assert picklist.level_after_fill(stock_before=3, filled=5, sold_out=True, capacity=10) == 5
    assert picklist.level_after_fill(stock_before=None, filled=4, sold_out=False, capacity=10) == 4
    one = picklist.LineUnits(uuid.UUID(int=1), 6)
    two = picklist.LineUnits(uuid.UUID(int=2), 2)
    totals = picklist.product_totals([one, two, picklist.LineUnits(uuid.UUID(int=1), 5)])
    assert totals == {uuid.UUID(int=1): 11, uuid.UUID(int=2): 2}


# -- creation --------------------------------------------------------------------------------


async def _route_of_two(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> tuple[str, VendingMachine, VendingMachine]:
    """Two machines sharing a cola sold in cases of 6; the second needs nothing but cash."""
    first = await vending_machine(
        client,
        db,
        tenant,
        [
            Slot("A10", capacity=10, par=8, fill_level=10, sold=7, case_size=6, product="cola"),
            Slot("A2", capacity=10, par=8, fill_level=10, sold=1),  # 9 left: nothing needed
            Slot("B1", capacity=6, par=5),  # never filled through us: unknown
            Slot("A1", capacity=12, par=12, fill_level=6, sold=6),  # empty
        ],
        name="first",
    )
    second = await vending_machine(
        client,
        db,
        tenant,
        [
            Slot("C1", capacity=10, par=10, fill_level=8, sold=0, case_size=6, product="cola"),
        ],
        name="second",
    )
    route_id = await make_route(
        client,
        tenant,
        device_ids=[first.device_id, second.device_id],
        driver_ids=[tenant.user_ids[Role.DRIVER]],
    )
    return route_id, first, second


async def test_an_order_is_created_with_its_visits_and_pick_list(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    route_id, first, second = await _route_of_two(client, db, tenant)
    driver = tenant.user_ids[Role.DRIVER]
    order = await make_order(client, tenant, route_id, driver_id=str(driver), note="monday")
    assert (order["state"], order["driver_id"], order["note"]) == ("draft", str(driver), "monday")
    assert order["service_date"] == "2030-01-15"
    stops = order["stops"]
    assert [s["device_id"] for s in stops] == [first.device_id, second.device_id]
    assert [s["visit"]["position"] for s in stops] == [0, 1]
    lines = {line["slot"]: line for c in stops[0]["cabinets"] for line in c["lines"]}
    assert [line["slot"] for c in stops[0]["cabinets"] for line in c["lines"]] == [
        "A1",
        "A10",
        "B1",
    ]  # A2 needs nothing; natural slot order
    assert (lines["A10"]["estimated_stock"], lines["A10"]["planned"]) == (3, 6)  # a case
    assert (lines["B1"]["stock_known"], lines["B1"]["planned"]) == (False, 5)
    assert (lines["A1"]["estimated_stock"], lines["A1"]["planned"]) == (0, 12)
    second_lines = [line for c in stops[1]["cabinets"] for line in c["lines"]]
    assert [(x["slot"], x["planned"]) for x in second_lines] == [("C1", 2)]  # case won't fit
    cola = first.products["A10"]
    assert second.products["C1"] == cola
    warehouse = {w["product_id"]: w for w in order["warehouse"]}
    assert (warehouse[str(cola)]["units"], warehouse[str(cola)]["cases"]) == (8, 2)
    assert warehouse[str(cola)]["name"] == "cola"
    a1 = warehouse[str(first.products["A1"])]
    assert (a1["units"], a1["case_size"], a1["cases"], a1["sku"][:4]) == (12, None, None, "SKU-")
    assert len(warehouse) == 3
    read = await client.get(f"{ORDERS}/{order['id']}", headers=tenant.headers(Role.VIEWER))
    assert read.json() == order
    actions = [(e["action"], e["actor_id"]) for e in await audit_of(client, tenant, order["id"])]
    assert actions == [("vending_service_order.create", str(tenant.user_ids[Role.MANAGER]))]


async def test_creation_is_refused_for_bad_drivers_empty_routes_and_non_managers(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    route_id, _, _ = await _route_of_two(client, db, tenant)
    url = f"/api/v1/vending/routes/{route_id}/service-orders"
    body = {"service_date": "2030-01-15"}
    for user_id in (tenant.user_ids[Role.VIEWER], other_tenant.user_ids[Role.DRIVER]):
        refused = await client.post(
            url, headers=tenant.headers(Role.MANAGER), json={**body, "driver_id": str(user_id)}
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (422, "NOT_A_DRIVER")
    for role in (Role.OPERATOR, Role.DRIVER):
        assert (await client.post(url, headers=tenant.headers(role), json=body)).status_code == 403
    empty = await make_route(client, tenant)
    refused = await client.post(
        f"/api/v1/vending/routes/{empty}/service-orders",
        headers=tenant.headers(Role.MANAGER),
        json=body,
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "ROUTE_EMPTY")
    assert (await client.get(ORDERS, headers=tenant.headers(Role.MANAGER))).json()["items"] == []


async def _count(db: Database, model: Any, org_id: uuid.UUID) -> int:
    async with db.session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(model).where(model.organization_id == org_id)
            )
            or 0
        )


async def test_a_failure_midway_leaves_no_order_and_no_lines(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    route_id, _, _ = await _route_of_two(client, db, tenant)
    manager = Principal(
        kind=PrincipalKind.USER,
        subject_id=tenant.user_ids[Role.MANAGER],
        organization_id=tenant.org_id,
        role=Role.MANAGER,
    )
    async with db.session(write=True) as session:
        plan = await plan_route(session, tenant.org_id, uuid.UUID(route_id))
        assert len(plan.lines) == 4
        # The last line repeats the first: the database's unique (order, cabinet, slot)
        # refuses it after the order, its visits and three lines were written.
        plan.lines.append(dict(plan.lines[0]))
        order = ServiceOrder(
            id=uuid.uuid4(),
            organization_id=tenant.org_id,
            route_id=uuid.UUID(route_id),
            service_date=__import__("datetime").date(2030, 1, 15),
            state="draft",
        )
        with pytest.raises(Conflict) as caught:
            await store_order(session, manager, order, plan)
        assert caught.value.code == "ORDER_NOT_CREATED"
    for model in (ServiceOrder, ServiceVisit, PickLine):
        assert await _count(db, model, tenant.org_id) == 0, model.__name__
    assert await audit_of(client, tenant, order.id) == []
    # The same plan without the duplicate goes in whole.
    async with db.session(write=True) as session:
        plan.lines.pop()
        order.id = uuid.uuid4()
        stored = await store_order(
            session,
            manager,
            ServiceOrder(
                id=order.id,
                organization_id=tenant.org_id,
                route_id=uuid.UUID(route_id),
                service_date=order.service_date,
                state="draft",
            ),
            plan,
        )
    assert (
        await _count(db, PickLine, tenant.org_id),
        await _count(db, ServiceVisit, tenant.org_id),
    ) == (4, 2)
    assert stored.id == order.id


# -- states ----------------------------------------------------------------------------------


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], order_id: object, action: str, **body: Any
) -> httpx.Response:
    return await client.post(f"{ORDERS}/{order_id}/{action}", headers=headers, json=body or None)


async def test_the_state_machine_refuses_every_other_move(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    route_id, _, _ = await _route_of_two(client, db, tenant)
    manager = tenant.headers(Role.MANAGER)
    order = (await make_order(client, tenant, route_id))["id"]

    async def refused(action: str, state: str) -> None:
        answer = await _post(client, manager, order, action)
        assert answer.status_code == 409, (action, answer.text)
        assert answer.json()["error"] == {
            **answer.json()["error"],
            "code": "ORDER_STATE",
            "details": {"state": state},
        }

    await refused("start", "draft")
    await refused("complete", "draft")
    for role in (Role.VIEWER, Role.OPERATOR, Role.DRIVER):
        assert (await _post(client, tenant.headers(role), order, "issue")).status_code == 403
    issued = await _post(client, manager, order, "issue")
    assert (issued.json()["state"], issued.json()["issued_at"] is not None) == ("issued", True)
    await refused("issue", "issued")
    await move(client, tenant, order, "start")
    await refused("start", "in_progress")
    await refused("issue", "in_progress")
    completed = await _post(client, manager, order, "complete", skip_unvisited=True)
    assert completed.json()["state"] == "completed"
    for action in ("issue", "start", "complete", "cancel"):
        await refused(action, "completed")

    cancelled_order = (await make_order(client, tenant, route_id))["id"]
    cancelled = await _post(client, manager, cancelled_order, "cancel")
    assert (cancelled.json()["state"], cancelled.json()["cancelled_at"] is not None) == (
        "cancelled",
        True,
    )
    for action in ("issue", "start", "complete", "cancel"):
        answer = await _post(client, manager, cancelled_order, action)
        assert (answer.status_code, answer.json()["error"]["details"]) == (
            409,
            {"state": "cancelled"},
        )
    for states in (("issue",), ("issue", "start")):
        other = (await make_order(client, tenant, route_id))["id"]
        await move(client, tenant, other, *states, "cancel")

    events = await audit_of(client, tenant, order)
    assert [(e["action"], e["details"]["state"]) for e in events] == [
        ("vending_service_order.create", "draft"),
        ("vending_service_order.issue", "issued"),
        ("vending_service_order.start", "in_progress"),
        ("vending_service_order.complete", "completed"),
    ]
    assert {e["actor_id"] for e in events} == {str(tenant.user_ids[Role.MANAGER])}


async def test_planned_quantities_change_only_in_draft(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    route_id, first, _ = await _route_of_two(client, db, tenant)
    order = await make_order(client, tenant, route_id)
    line = order["stops"][0]["cabinets"][0]["lines"][0]  # A1, capacity 12
    url = f"{ORDERS}/{order['id']}/lines/{line['id']}"
    manager = tenant.headers(Role.MANAGER)
    too_many = await client.patch(url, headers=manager, json={"planned": 13})
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (422, "ABOVE_CAPACITY")
    assert (
        await client.patch(url, headers=tenant.headers(Role.DRIVER), json={"planned": 1})
    ).status_code == 403
    changed = await client.patch(url, headers=manager, json={"planned": 0})
    assert (changed.status_code, changed.json()["planned"]) == (200, 0)
    detail = (await client.get(f"{ORDERS}/{order['id']}", headers=manager)).json()
    assert str(first.products["A1"]) not in {w["product_id"] for w in detail["warehouse"]}
    missing = await client.patch(
        f"{ORDERS}/{order['id']}/lines/999999999", headers=manager, json={"planned": 1}
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "PICK_LINE_NOT_FOUND")
    await move(client, tenant, order["id"], "issue")
    late = await client.patch(url, headers=manager, json={"planned": 2})
    assert (late.status_code, late.json()["error"]["details"]) == (409, {"state": "issued"})
    events = await audit_of(client, tenant, order["id"])
    plan = [e["details"] for e in events if e["action"] == "vending_service_order.plan"]
    assert [(p["slot"], p["planned"], p["previous"]) for p in plan] == [("A1", 0, 12)]


async def test_concurrent_starts_and_completes_have_one_winner(
    live_client: httpx.AsyncClient, live_database: Database, live_tenant: Tenant
) -> None:
    client, tenant = live_client, live_tenant
    route_id, _, _ = await _route_of_two(client, live_database, tenant)
    driver = tenant.headers(Role.DRIVER)
    manager = tenant.headers(Role.MANAGER)
    for _ in range(3):
        order = (await make_order(client, tenant, route_id))["id"]
        await move(client, tenant, order, "issue")
        starts = await asyncio.gather(
            _post(client, driver, order, "start"), _post(client, manager, order, "start")
        )
        assert sorted(a.status_code for a in starts) == [200, 409], [a.text for a in starts]
        loser = next(a for a in starts if a.status_code == 409)
        assert loser.json()["error"]["code"] == "ORDER_STATE"
        completes = await asyncio.gather(
            *(_post(client, manager, order, "complete", skip_unvisited=True) for _ in range(2))
        )
        assert sorted(a.status_code for a in completes) == [200, 409]
        events = await audit_of(client, tenant, order)
        actions = [e["action"].rsplit(".", 1)[1] for e in events]
        assert actions == ["create", "issue", "start", "complete"]


# -- the driver's work -----------------------------------------------------------------------


async def _stock(db: Database, cabinet_id: uuid.UUID, slot: str) -> SlotStock:
    async with db.session() as session:
        stock = await session.scalar(
            select(SlotStock).where(SlotStock.cabinet_id == cabinet_id, SlotStock.slot == slot)
        )
    assert stock is not None
    return stock


async def _started(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> tuple[dict[str, Any], VendingMachine, VendingMachine]:
    route_id, first, second = await _route_of_two(client, db, tenant)
    order = await make_order(client, tenant, route_id, driver_id=str(tenant.user_ids[Role.DRIVER]))
    await move(client, tenant, order["id"], "issue")
    started = await _post(client, tenant.headers(Role.DRIVER), order["id"], "start")
    assert started.status_code == 200, started.text
    return order, first, second


def _lines(order: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        line["slot"]: line
        for stop in order["stops"]
        for c in stop["cabinets"]
        for line in c["lines"]
    }


async def test_a_fill_resets_the_stock_estimate(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    order, first, second = await _started(client, db, tenant)
    lines = _lines(order)
    driver = tenant.headers(Role.DRIVER)

    async def fill(slot: str, **body: Any) -> httpx.Response:
        return await client.put(
            f"{ORDERS}/{order['id']}/lines/{lines[slot]['id']}", headers=driver, json=body
        )

    filled = await fill("A10", filled=6)  # 3 left + 6
    assert filled.status_code == 200, filled.text
    assert (filled.json()["filled"], filled.json()["filled_by"]) == (
        6,
        str(tenant.user_ids[Role.DRIVER]),
    )
    a10 = await _stock(db, first.cabinet_id, "A10")
    assert (a10.fill_level, a10.sold_since_fill, a10.filled_at is not None) == (9, 0, True)
    # Found sold out despite the estimate (3): the stock before was 0.
    corrected = await fill("A10", filled=6, sold_out=True)
    assert corrected.json()["sold_out"] is True
    assert (await _stock(db, first.cabinet_id, "A10")).fill_level == 6
    # More than fits is capped at capacity; unknown stock counts from 0.
    assert (await fill("A1", filled=12)).status_code == 200
    assert (await _stock(db, first.cabinet_id, "A1")).fill_level == 12
    assert (await fill("B1", filled=4)).status_code == 200
    b1 = await _stock(db, first.cabinet_id, "B1")
    assert (b1.fill_level, b1.sold_since_fill) == (4, 0)
    c1 = await fill("C1", filled=0)
    assert c1.status_code == 200
    assert (await _stock(db, second.cabinet_id, "C1")).fill_level == 8  # 8 left, nothing added
    over = await fill("A1", filled=13)
    assert (over.status_code, over.json()["error"]["code"]) == (422, "ABOVE_CAPACITY")
    negative = await fill("A1", filled=-1)
    assert negative.status_code == 422
    events = [
        e for e in await audit_of(client, tenant, order["id"]) if e["action"].endswith(".fill")
    ]
    assert [
        (e["details"]["slot"], e["details"]["level"], e["details"]["correction"]) for e in events
    ] == [
        ("A10", 9, False),
        ("A10", 6, True),
        ("A1", 12, False),
        ("B1", 4, False),
        ("C1", 8, False),
    ]
    assert {e["actor_id"] for e in events} == {str(tenant.user_ids[Role.DRIVER])}


async def test_fills_and_cash_only_while_in_progress_and_by_the_assigned_driver(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    from tests.support.tenants import driver_headers

    route_id, first, _ = await _route_of_two(client, db, tenant)
    other_id, other_driver = await driver_headers(client, db, tenant)
    await client.put(
        f"/api/v1/vending/routes/{route_id}/drivers",
        headers=tenant.headers(Role.MANAGER),
        json={"user_ids": [str(tenant.user_ids[Role.DRIVER]), str(other_id)]},
    )
    order = await make_order(client, tenant, route_id, driver_id=str(tenant.user_ids[Role.DRIVER]))
    line = _lines(order)["A1"]
    fill_url = f"{ORDERS}/{order['id']}/lines/{line['id']}"
    visit_url = f"{ORDERS}/{order['id']}/visits/{first.device_id}"
    driver = tenant.headers(Role.DRIVER)
    early = await client.put(fill_url, headers=driver, json={"filled": 1})
    assert (early.status_code, early.json()["error"]["details"]) == (409, {"state": "draft"})
    await move(client, tenant, order["id"], "issue")
    # The other driver of the route sees the order but may not take it.
    assert (await client.get(f"{ORDERS}/{order['id']}", headers=other_driver)).status_code == 200
    taken = await _post(client, other_driver, order["id"], "start")
    assert (taken.status_code, taken.json()["error"]["code"]) == (403, "NOT_YOUR_ORDER")
    assert (await _post(client, driver, order["id"], "start")).status_code == 200
    for url, body in ((fill_url, {"filled": 1}), (visit_url, {"cash_collected": "1.00"})):
        theirs = await client.put(url, headers=other_driver, json=body)
        assert (theirs.status_code, theirs.json()["error"]["code"]) == (403, "NOT_YOUR_ORDER")
        assert (
            await client.put(url, headers=tenant.headers(Role.OPERATOR), json=body)
        ).status_code == 403
    by_manager = await client.put(
        fill_url, headers=tenant.headers(Role.MANAGER), json={"filled": 2}
    )
    assert by_manager.json()["filled_by"] == str(tenant.user_ids[Role.MANAGER])
    cash = await client.put(visit_url, headers=driver, json={"cash_collected": "123.4567"})
    assert cash.status_code == 200, cash.text
    assert Decimal(cash.json()["cash_collected"]) == Decimal("123.4567")
    assert cash.json()["serviced_at"] is not None
    for bad in ("-1", "1.00001", "abc"):
        refused = await client.put(visit_url, headers=driver, json={"cash_collected": bad})
        assert refused.status_code == 422, bad
    stranger = await client.put(
        f"{ORDERS}/{order['id']}/visits/{uuid.uuid4()}",
        headers=driver,
        json={"cash_collected": "0"},
    )
    assert (stranger.status_code, stranger.json()["error"]["code"]) == (404, "VISIT_NOT_FOUND")
    await _post(client, tenant.headers(Role.MANAGER), order["id"], "cancel")
    after = await client.put(visit_url, headers=driver, json={"cash_collected": "1"})
    assert (after.status_code, after.json()["error"]["details"]) == (409, {"state": "cancelled"})
    visit = [
        e for e in await audit_of(client, tenant, order["id"]) if e["action"].endswith(".visit")
    ]
    assert [(e["details"]["cash_collected"], e["actor_id"]) for e in visit] == [
        ("123.4567", str(tenant.user_ids[Role.DRIVER]))
    ]


async def test_completing_needs_every_visit_or_skip_unvisited(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    order, first, second = await _started(client, db, tenant)
    driver = tenant.headers(Role.DRIVER)
    await client.put(
        f"{ORDERS}/{order['id']}/visits/{first.device_id}",
        headers=driver,
        json={"cash_collected": 0},
    )
    refused = await _post(client, driver, order["id"], "complete")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "VISITS_UNSERVICED"
    assert refused.json()["error"]["details"] == {"device_ids": [second.device_id]}
    done = await _post(client, driver, order["id"], "complete", skip_unvisited=True)
    assert (done.status_code, done.json()["state"]) == (200, "completed")
    detail = (await client.get(f"{ORDERS}/{order['id']}", headers=driver)).json()
    assert [s["visit"]["serviced_at"] is not None for s in detail["stops"]] == [True, False]
    assert [s["visit"]["cash_collected"] for s in detail["stops"]] == ["0.00", None]
    complete = [
        e for e in await audit_of(client, tenant, order["id"]) if e["action"].endswith(".complete")
    ]
    assert complete[0]["details"]["skipped"] == [second.device_id]
    # With every visit recorded, no flag is needed.
    again, _, _ = await _started(client, db, tenant)
    for stop in again["stops"]:
        await client.put(
            f"{ORDERS}/{again['id']}/visits/{stop['device_id']}",
            headers=driver,
            json={"cash_collected": "5"},
        )
    assert (await _post(client, driver, again["id"], "complete")).status_code == 200


async def test_the_list_filters_and_pages(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    route_id, _, _ = await _route_of_two(client, db, tenant)
    other_route, _, _ = await _route_of_two(client, db, tenant)
    a = (await make_order(client, tenant, route_id))["id"]
    b = (await make_order(client, tenant, route_id, service_date="2030-02-01"))["id"]
    c = (await make_order(client, tenant, other_route))["id"]
    await move(client, tenant, b, "issue")
    manager = tenant.headers(Role.MANAGER)

    async def ids(**params: Any) -> list[str]:
        answer = await client.get(ORDERS, headers=manager, params=params)
        assert answer.status_code == 200, answer.text
        return [o["id"] for o in answer.json()["items"]]

    assert await ids() == [c, b, a]
    assert await ids(route_id=route_id) == [b, a]
    assert await ids(state="issued") == [b]
    assert await ids(date="2030-01-15") == [c, a]
    first_page = (await client.get(ORDERS, headers=manager, params={"limit": 2})).json()
    assert [o["id"] for o in first_page["items"]] == [c, b]
    assert await ids(cursor=first_page["next_cursor"]) == [a]
    bad = await client.get(ORDERS, headers=manager, params={"cursor": "nonsense"})
    assert bad.status_code == 422
    assert (await client.get(ORDERS, headers=manager, params={"state": "lost"})).status_code == 422


async def test_a_fill_racing_the_completion_never_lands_after_it(
    live_client: httpx.AsyncClient, live_database: Database, live_tenant: Tenant
) -> None:
    client, tenant = live_client, live_tenant
    driver = tenant.headers(Role.DRIVER)
    for _ in range(3):
        order, first, _ = await _started(client, live_database, tenant)
        line = _lines(order)["A1"]
        fill, complete = await asyncio.gather(
            client.put(
                f"{ORDERS}/{order['id']}/lines/{line['id']}", headers=driver, json={"filled": 3}
            ),
            _post(client, driver, order["id"], "complete", skip_unvisited=True),
        )
        assert complete.status_code == 200, complete.text
        stored = _lines((await client.get(f"{ORDERS}/{order['id']}", headers=driver)).json())["A1"]
        if fill.status_code == 200:  # the fill went first and the completion waited for it
            assert stored["filled"] == 3
            assert (await _stock(live_database, first.cabinet_id, "A1")).fill_level == 3
        else:
            assert (fill.status_code, fill.json()["error"]["details"]) == (
                409,
                {"state": "completed"},
            )
            assert stored["filled"] is None
            assert (await _stock(live_database, first.cabinet_id, "A1")).fill_level == 6
