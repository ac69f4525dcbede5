"""Planogram suggestions: the pure advice on hand-made cabinets, then the API over real rows."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import httpx

from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.vending.suggestions import (
    CabinetData,
    ProductInfo,
    SlotPlan,
    SlotStats,
    apply_changes,
    suggest,
)
from tests.support.tenants import Tenant
from tests.support.vending_catalog import (
    VENDING,
    driver_route,
    new_machine,
    new_product,
    put_planogram,
    seed_sales,
    seed_visits,
)

COLA, CHIPS, NUTS = (uuid.UUID(int=n) for n in (1, 2, 3))


def _product(pid: uuid.UUID, name: str, category: str, cost: str | None, price: str) -> ProductInfo:
    return ProductInfo(pid, name, category, Decimal(cost) if cost else None, Decimal(price))


def _capacity(slots: list[SlotPlan]) -> int:
    return sum(s.capacity for s in slots)


def _fast_seller_cabinet() -> CabinetData:
    """A1 sells 4 a day and was found sold out at 5 of 7 visits; A2 and A3 sell slowly."""
    return CabinetData(
        slots=[
            SlotPlan("A1", COLA, 8, 8, Decimal("1.50")),
            SlotPlan("A2", CHIPS, 10, 6, Decimal("1.00")),
            SlotPlan("A3", NUTS, 10, 5, Decimal("1.20")),
        ],
        stats={"A1": SlotStats(112, 5), "A2": SlotStats(14, 0), "A3": SlotStats(28, 0)},
        products={
            COLA: _product(COLA, "Cola", "drinks", "0.40", "1.50"),
            CHIPS: _product(CHIPS, "Chips", "snacks", "0.30", "1.00"),
            NUTS: _product(NUTS, "Nuts", "snacks", "0.50", "1.20"),
        },
        sales_days=28.0,
        visits=7,
        days_between_visits=4.0,
    )


def test_a_sold_out_fast_seller_takes_facings_from_slow_slots() -> None:
    data = _fast_seller_cabinet()
    advice = suggest(data)
    assert advice.status == "ok"
    assert [(c.id, c.amount, c.par_level) for c in advice.changes] == [
        ("move-A2-A1", 7, None),
        ("move-A3-A1", 5, None),
        ("par-A1", None, 20),
    ]
    assert advice.changes[0].reason == (
        "slot A1 sold out 5 of the last 7 visits (4.00 a day): give it 7 more facings"
        " (capacity 8 → 15) from slot A2, which sells 0.50 a day (capacity 10 → 3)"
    )
    assert advice.changes[2].reason == (
        "slot A1 sells 4.00 a day and visits are 4.0 days apart: raise par 8 → 20 to cover them"
    )
    by_slot = {s.slot: (s.capacity, s.par_level) for s in advice.slots}
    # A2 keeps what covers 4 days at 0.5 a day (3); its par follows its capacity down.
    assert by_slot == {"A1": (20, 20), "A2": (3, 3), "A3": (5, 5)}
    assert _capacity(advice.slots) == _capacity(data.slots)


def test_a_subset_of_changes_is_applied_alone() -> None:
    data = _fast_seller_cabinet()
    changes = {c.id: c for c in suggest(data).changes}
    only_par = apply_changes(data.slots, [changes["par-A1"]])
    assert (only_par[0].capacity, only_par[0].par_level) == (8, 8)  # clamped to capacity
    one_move = apply_changes(data.slots, [changes["move-A3-A1"], changes["par-A1"]])
    assert [(s.capacity, s.par_level) for s in one_move] == [(13, 13), (10, 6), (5, 5)]
    assert _capacity(one_move) == _capacity(data.slots)


def test_a_sold_out_slot_without_donors_gets_par_only() -> None:
    data = CabinetData(
        slots=[SlotPlan("A1", COLA, 8, 4, None), SlotPlan("A2", CHIPS, 3, 3, None)],
        stats={"A1": SlotStats(112, 6), "A2": SlotStats(30, 3)},
        products={},
        sales_days=28.0,
        visits=7,
        days_between_visits=4.0,
    )
    advice = suggest(data)
    assert [(c.id, c.par_level) for c in advice.changes] == [("par-A1", 8)]
    assert _capacity(advice.slots) == 11


def test_a_dead_slot_is_offered_the_best_margin_unused_product_of_its_category() -> None:
    chips, cookies, pretzels, water, archived, bars = (uuid.UUID(int=n) for n in range(10, 16))
    data = CabinetData(
        slots=[
            SlotPlan("A1", chips, 10, 5, Decimal("1.00")),
            SlotPlan("A2", cookies, 10, 10, None),
        ],
        stats={"A1": SlotStats(1, 0), "A2": SlotStats(28, 0)},
        products={
            p.id: p
            for p in (
                _product(chips, "Chips", "snacks", "0.30", "1.00"),
                _product(cookies, "Cookies", "snacks", "0.60", "1.50"),  # in use already
                _product(pretzels, "Pretzels", "snacks", "0.40", "1.20"),  # margin 0.80
                _product(water, "Water", "drinks", "0.20", "2.00"),  # another category
                ProductInfo(archived, "Old", "snacks", Decimal(0), Decimal(5), archived=True),
                _product(bars, "Bars", "snacks", None, "3.00"),  # no cost: margin unknown
            )
        },
        sales_days=28.0,
        visits=3,
        days_between_visits=None,
    )
    advice = suggest(data)
    assert [(c.id, c.product_id, c.price) for c in advice.changes] == [
        ("swap-A1", pretzels, Decimal("1.20"))
    ]
    assert advice.changes[0].reason == (
        "slot A1 sold 1 of Chips in 28 days (0.04 a day, under 0.1): replace it with"
        " Pretzels, the best-margin unused product of category 'snacks' (margin 0.80)"
    )
    assert advice.slots[0].product_id == pretzels


def test_ties_are_broken_by_slot_code_whatever_the_input_order() -> None:
    slots = [
        SlotPlan("B2", COLA, 5, 5, None),
        SlotPlan("B1", CHIPS, 5, 5, None),
        SlotPlan("C2", NUTS, 4, 1, None),
        SlotPlan("C1", NUTS, 6, 1, None),
    ]
    stats = {
        "B1": SlotStats(56, 4),
        "B2": SlotStats(56, 4),
        "C1": SlotStats(0, 0),
        "C2": SlotStats(0, 0),
    }
    outcomes = []
    for order in (slots, list(reversed(slots))):
        data = CabinetData(order, stats, {}, 28.0, 4, 3.5)
        advice = suggest(data)
        outcomes.append([(c.id, c.amount, c.par_level) for c in advice.changes])
        assert _capacity(advice.slots) == 20
    assert outcomes[0] == outcomes[1]
    # Both want 4 more; C1 (first by code) can spare 4, C2 only 2: B1 comes first.
    assert outcomes[0] == [
        ("move-C1-B1", 4, None),
        ("move-C2-B2", 2, None),
        ("par-B1", None, 9),
        ("par-B2", None, 7),
    ]


def test_too_few_data_say_what_is_missing() -> None:
    data = CabinetData(
        slots=[SlotPlan("A1", COLA, 8, 8, None)],
        stats={"A1": SlotStats(40, 2)},
        products={},
        sales_days=9.4,
        visits=1,
        days_between_visits=None,
    )
    advice = suggest(data)
    assert (advice.status, advice.changes) == ("insufficient_data", [])
    assert advice.missing == [
        "sales: 9 days of data, 14 needed",
        "visits: 1 service visits recorded, 3 needed",
    ]
    assert advice.slots == data.slots


# -- through the API, over rows ------------------------------------------------------------------


async def _seeded_cabinet(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, *, days: int, visits: int
) -> tuple[str, dict[str, str]]:
    """A cabinet like _fast_seller_cabinet, with `days` of weekly sales and `visits` visits
    4 days apart (A1 sold out at the last five)."""
    route_id = await driver_route(db, tenant)
    machine = await new_machine(client, tenant, route_id=str(route_id))
    cabinet_id = machine["cabinets"][0]["id"]
    ids = {
        name: (
            await new_product(
                client, tenant, name=name, category=cat, unit_cost="0.3", default_price=price
            )
        )["id"]
        for name, cat, price in (
            ("Cola", "drinks", "1.50"),
            ("Chips", "snacks", "1.00"),
            ("Nuts", "snacks", "1.20"),
        )
    }
    slots = [
        {"slot": "A1", "product_id": ids["Cola"], "capacity": 8, "par_level": 8},
        {"slot": "A2", "product_id": ids["Chips"], "capacity": 10, "par_level": 6},
        {"slot": "A3", "product_id": ids["Nuts"], "capacity": 10, "par_level": 5},
    ]
    assert (await put_planogram(client, tenant, cabinet_id, slots)).status_code == 200
    now = utcnow()
    weekly = {"A1": (28, 28, 28, 28), "A2": (4, 3, 4, 3), "A3": (7, 7, 7, 7)}
    product_of = {"A1": ids["Cola"], "A2": ids["Chips"], "A3": ids["Nuts"]}
    rows = []
    for week in range(days // 7):
        end = now - timedelta(days=7 * week)
        for slot, units in weekly.items():
            rows.append((slot, product_of[slot], units[week], end - timedelta(days=7), end))
    # Sales of a product the slot held before are not its current product's velocity.
    rows.append(("A2", ids["Cola"], 500, now - timedelta(days=3), now - timedelta(days=2)))
    await seed_sales(db, tenant, machine["device_id"], cabinet_id, rows)
    await seed_visits(
        db,
        tenant,
        route_id,
        machine["device_id"],
        cabinet_id,
        [
            (now - timedelta(days=4 * k), {"A1": k < 5, "A2": False, "A3": False})
            for k in range(visits)
        ],
    )
    return cabinet_id, ids


async def test_suggestion_from_sales_and_visits_is_applied_as_a_new_version(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    cabinet_id, _ = await _seeded_cabinet(client, tenant, db, days=28, visits=7)
    manager = tenant.headers(Role.MANAGER)
    url = f"{VENDING}/cabinets/{cabinet_id}/suggestion"
    response = await client.get(url, headers=tenant.headers(Role.VIEWER))
    assert response.status_code == 200, response.text
    advice = response.json()
    assert (advice["status"], advice["based_on_version"], advice["visits"]) == ("ok", 1, 7)
    assert (advice["sales_days"], advice["days_between_visits"]) == (28.0, 4.0)
    assert [(c["id"], c["amount"], c["par_level"]) for c in advice["changes"]] == [
        ("move-A2-A1", 7, None),
        ("move-A3-A1", 5, None),
        ("par-A1", None, 20),
    ]
    assert advice["changes"][0]["reason"].startswith("slot A1 sold out 5 of the last 7 visits")
    assert [(s["slot"], s["capacity"]) for s in advice["slots"]] == [
        ("A1", 20),
        ("A2", 3),
        ("A3", 5),
    ]

    applied = await client.post(
        f"{url}/apply", headers=manager, json={"based_on_version": 1, "changes": ["move-A3-A1"]}
    )
    assert applied.status_code == 201, applied.text
    version = applied.json()
    assert (version["version"], version["source"]) == (2, "suggestion")
    assert version["note"] == advice["changes"][1]["reason"]
    assert [(s["slot"], s["capacity"], s["par_level"]) for s in version["slots"]] == [
        ("A1", 13, 8),
        ("A2", 10, 6),
        ("A3", 5, 5),
    ]
    stale = await client.post(f"{url}/apply", headers=manager, json={"based_on_version": 1})
    assert (stale.status_code, stale.json()["error"]["code"]) == (409, "PLANOGRAM_CHANGED")
    unknown = await client.post(
        f"{url}/apply", headers=manager, json={"based_on_version": 2, "changes": ["move-A9-A1"]}
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (409, "SUGGESTION_CHANGED")
    refused = await client.post(
        f"{url}/apply", headers=tenant.headers(Role.VIEWER), json={"based_on_version": 2}
    )
    assert refused.status_code == 403


async def test_too_few_data_answer_insufficient_data(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    cabinet_id, _ = await _seeded_cabinet(client, tenant, db, days=7, visits=2)
    url = f"{VENDING}/cabinets/{cabinet_id}/suggestion"
    advice = (await client.get(url, headers=tenant.headers(Role.MANAGER))).json()
    assert (advice["status"], advice["changes"]) == ("insufficient_data", [])
    assert advice["missing"] == [
        "sales: 7 days of data, 14 needed",
        "visits: 2 service visits recorded, 3 needed",
    ]
    apply = await client.post(
        f"{url}/apply", headers=tenant.headers(Role.MANAGER), json={"based_on_version": 1}
    )
    assert (apply.status_code, apply.json()["error"]["code"]) == (409, "SUGGESTION_UNAVAILABLE")
    machine = await new_machine(client, tenant)
    empty = await client.get(
        f"{VENDING}/cabinets/{machine['cabinets'][0]['id']}/suggestion",
        headers=tenant.headers(Role.MANAGER),
    )
    assert empty.json()["based_on_version"] is None
    assert empty.json()["missing"][0] == "the cabinet has no planogram (or no slots) yet"
