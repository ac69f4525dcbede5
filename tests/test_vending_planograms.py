"""Planograms: every PUT is a new version, old versions never change, diffs, races."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant
from tests.support.vending_catalog import VENDING, new_machine, new_product, put_planogram


def _slot(
    code: str, product_id: str, capacity: int = 10, par: int = 8, **extra: Any
) -> dict[str, Any]:
    return {"slot": code, "product_id": product_id, "capacity": capacity, "par_level": par, **extra}


async def test_versions_are_kept_and_never_edited(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    machine = await new_machine(client, tenant)
    cabinet_id = machine["cabinets"][0]["id"]
    cola = await new_product(client, tenant, name="Cola", default_price="1.50")
    chips = await new_product(client, tenant, name="Chips", default_price="1.00")
    manager = tenant.headers(Role.MANAGER)

    missing = await client.get(f"{VENDING}/cabinets/{cabinet_id}/planogram", headers=manager)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "PLANOGRAM_NOT_FOUND")

    first = await put_planogram(
        client, tenant, cabinet_id, [_slot("A1", cola["id"]), _slot("A2", chips["id"])], "opening"
    )
    assert first.status_code == 200, first.text
    v1 = first.json()
    assert (v1["version"], v1["source"], v1["note"]) == (1, "manual", "opening")
    assert [(s["slot"], s["product_name"], s["price"]) for s in v1["slots"]] == [
        ("A1", "Cola", "1.50"),
        ("A2", "Chips", "1.00"),
    ]
    second = await put_planogram(
        client,
        tenant,
        cabinet_id,
        [_slot("A1", chips["id"], price="1.10"), _slot("A3", cola["id"], capacity=12, par=12)],
    )
    v2 = second.json()
    assert v2["version"] == 2

    old = await client.get(f"{VENDING}/planograms/{v1['id']}", headers=manager)
    assert old.json() == v1
    current = await client.get(f"{VENDING}/cabinets/{cabinet_id}/planogram", headers=manager)
    assert current.json()["id"] == v2["id"]
    history = await client.get(
        f"{VENDING}/cabinets/{cabinet_id}/planograms", headers=manager, params={"limit": 1}
    )
    assert [p["version"] for p in history.json()["items"]] == [2]
    older = await client.get(
        f"{VENDING}/cabinets/{cabinet_id}/planograms",
        headers=manager,
        params={"limit": 1, "cursor": history.json()["next_cursor"]},
    )
    assert [p["version"] for p in older.json()["items"]] == [1]
    assert older.json()["next_cursor"] is None

    diff = (await client.get(f"{VENDING}/planograms/{v2['id']}/diff", headers=manager)).json()
    assert diff["against_id"] == v1["id"]
    assert [s["slot"] for s in diff["added"]] == ["A3"]
    assert [s["slot"] for s in diff["removed"]] == ["A2"]
    assert diff["changed"] == [
        {
            "slot": "A1",
            "fields": {"product_id": [cola["id"], chips["id"]], "price": ["1.50", "1.10"]},
        }
    ]
    backwards = await client.get(
        f"{VENDING}/planograms/{v1['id']}/diff", headers=manager, params={"against": v2["id"]}
    )
    assert [s["slot"] for s in backwards.json()["added"]] == ["A2"]
    assert [s["slot"] for s in backwards.json()["removed"]] == ["A3"]
    first_diff = (await client.get(f"{VENDING}/planograms/{v1['id']}/diff", headers=manager)).json()
    assert (first_diff["against_id"], len(first_diff["added"])) == (None, 2)


@pytest.mark.parametrize(
    ("slots", "field"),
    [
        pytest.param(
            [{"slot": "A1", "capacity": 5, "par_level": 6}], "body.slots", id="par>capacity"
        ),
        pytest.param(
            [{"slot": "A1", "capacity": 5, "par_level": 1}] * 2, "body.slots", id="same-slot-twice"
        ),
        pytest.param(
            [{"slot": "A-1", "capacity": 5, "par_level": 1}], "body.slots.0.slot", id="grammar"
        ),
        pytest.param(
            [{"slot": "A123456", "capacity": 5, "par_level": 1}], "body.slots.0.slot", id="too-long"
        ),
        pytest.param(
            [{"slot": "A1", "capacity": 0, "par_level": 0}], "body.slots.0.capacity", id="cap-0"
        ),
        pytest.param(
            [{"slot": "A1", "capacity": 1000, "par_level": 1}],
            "body.slots.0.capacity",
            id="cap-1000",
        ),
        pytest.param(
            [{"slot": "A1", "capacity": 5, "par_level": -1}], "body.slots.0.par_level", id="par<0"
        ),
    ],
)
async def test_invalid_planograms_are_422(
    client: httpx.AsyncClient, tenant: Tenant, slots: list[dict[str, Any]], field: str
) -> None:
    machine = await new_machine(client, tenant)
    response = await put_planogram(client, tenant, machine["cabinets"][0]["id"], slots)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["errors"][0]["field"] == field


async def test_products_must_be_the_organizations(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    machine = await new_machine(client, tenant)
    foreign = await new_product(client, other_tenant)
    response = await put_planogram(
        client, tenant, machine["cabinets"][0]["id"], [_slot("A1", foreign["id"])]
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"slot": "A1", "product_id": foreign["id"]}
    empty_slot = await put_planogram(
        client,
        tenant,
        machine["cabinets"][0]["id"],
        [{"slot": "A1", "capacity": 4, "par_level": 0}],
    )
    assert empty_slot.json()["slots"][0]["product_id"] is None


async def test_a_slot_code_belongs_to_one_cabinet_of_a_machine(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    machine = await new_machine(
        client, tenant, cabinets=[{"name": "snacks"}, {"name": "drinks", "position": 1}]
    )
    snacks, drinks = (c["id"] for c in machine["cabinets"])
    product = await new_product(client, tenant)
    assert (
        await put_planogram(client, tenant, snacks, [_slot("A1", product["id"])])
    ).status_code == 200
    clash = await put_planogram(client, tenant, drinks, [_slot("A1", product["id"])])
    assert clash.status_code == 409
    assert clash.json()["error"]["code"] == "SLOT_IN_OTHER_CABINET"
    assert clash.json()["error"]["details"] == {"slot": "A1", "cabinet_id": snacks}
    assert (
        await put_planogram(client, tenant, drinks, [_slot("B1", product["id"])])
    ).status_code == 200
    # Another machine may use the same code: audits are per machine.
    other = await new_machine(client, tenant)
    again = await put_planogram(
        client, tenant, other["cabinets"][0]["id"], [_slot("A1", product["id"])]
    )
    assert again.status_code == 200


async def test_concurrent_puts_make_distinct_versions_or_a_clean_409(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    machine = await new_machine(live_client, live_tenant)
    cabinet_id = machine["cabinets"][0]["id"]
    product = await new_product(live_client, live_tenant)
    answers = await asyncio.gather(
        *(
            put_planogram(live_client, live_tenant, cabinet_id, [_slot("A1", product["id"], par=n)])
            for n in range(1, 7)
        )
    )
    assert {a.status_code for a in answers} <= {200, 409}, [a.text for a in answers]
    made = [a.json()["version"] for a in answers if a.status_code == 200]
    assert made
    assert len(made) == len(set(made))
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["error"]["code"] == "PLANOGRAM_CHANGED"
    history = await live_client.get(
        f"{VENDING}/cabinets/{cabinet_id}/planograms", headers=live_tenant.headers(Role.MANAGER)
    )
    assert sorted(p["version"] for p in history.json()["items"]) == sorted(made)
    assert sorted(made) == list(range(1, len(made) + 1))
