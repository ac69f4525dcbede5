"""Vending pages over HTTP: the figures they show, organization and driver scope, roles."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.vending.models import SlotStock
from fleetcore_protocol.dex.model import Counter
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write
from tests.conftest import client_for
from tests.support.devices import new_device
from tests.support.tenants import Tenant
from tests.support.vending_catalog import (
    driver_route,
    new_machine,
    new_product,
    put_planogram,
    seed_sales,
    seed_visits,
)
from tests.support.vending_fleet import DAMAGED_WARNING, MONTH, TODAY, WEEK, Fleet, seed_fleet


@asynccontextmanager
async def signed_in(app: FastAPI, tenant: Tenant, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie of the tenant's user with `role`."""
    async with client_for(app) as http:
        http.cookies.set(SESSION_COOKIE, tenant.tokens[role])
        yield http


@pytest.fixture
async def fleet(client: httpx.AsyncClient, db: Database, tenant: Tenant) -> Fleet:
    lobby, _ = await new_device(client, tenant, name="Lobby snacks")
    station, _ = await new_device(client, tenant, name="Station drinks")
    return await seed_fleet(db, tenant, lobby, station, now=datetime.now(UTC))


def pages(fleet: Fleet) -> dict[str, str]:
    return {
        "fleet": "/vending",
        "machine": f"/vending/machines/{fleet.machine}",
        "products": "/vending/products",
        "planogram": f"/vending/planograms/{fleet.planogram}",
        "routes": "/vending/routes",
        "order": f"/service-orders/{fleet.order}",
    }


def text_of(html: str, attribute: str) -> str:
    """The text inside the first element carrying `attribute` (e.g. 'data-units')."""
    found = re.search(rf"{attribute}[^>]*>([^<]*)<", html)
    assert found, attribute
    return found.group(1).strip()


def section(html: str, attribute: str) -> str:
    """The page from the element carrying `attribute` to the end of its card."""
    start = html.index(attribute)
    return html[start : html.index("</section>", start)]


async def test_a_manager_sees_the_fleet_figures(app: FastAPI, tenant: Tenant, fleet: Fleet) -> None:
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get("/vending")
    assert page.status_code == 200, page.text[:500]
    html = page.text
    for key, (units, revenue) in (("today", TODAY), ("7d", WEEK), ("30d", MONTH)):
        card = html[html.index(f'data-sales="{key}"') :]
        assert text_of(card, "data-units") == str(units), key
        assert text_of(card, "data-revenue") == revenue, key
    top = html[html.index('data-products="top"') : html.index('data-products="bottom"')]
    assert top.index("Water") < top.index("Chips") < top.index("Cola")  # 7, 5, 3 units
    assert "Gum" not in top  # sold only 40 days ago
    bottom = html[html.index('data-products="bottom"') :]
    assert "Gum" in bottom.split("</table>")[0]
    sold_out = html[html.index('data-list="sold-out"') : html.index('data-list="not-audited"')]
    assert f'href="/vending/machines/{fleet.machine}"' in sold_out
    assert "1 sold out" in sold_out
    stale = html[html.index('data-list="not-audited"') :]
    assert f'href="/vending/machines/{fleet.other_machine}"' in stale
    assert f'href="/vending/machines/{fleet.machine}"' not in stale
    assert 'href="/vending" aria-current="page"' in html  # the navigation has Vending


async def test_a_machine_page_shows_its_slots_sales_and_audits(
    app: FastAPI, tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get(f"/vending/machines/{fleet.machine}")
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert "Lobby snacks" in html
    a1 = html[html.index('data-slot="A1"') : html.index('data-slot="A2"')]
    assert "Cola" in a1
    assert "2.50" in a1
    assert 'value="6"' in a1
    assert text_of(a1, "data-stock") == "6 / 10"
    assert "data-sold-out" not in a1
    a2 = html[html.index('data-slot="A2"') : html.index('data-slot="A3"')]
    assert "sold-out" in a2
    assert "data-sold-out" in a2
    assert text_of(a2, "data-stock") == "0 / 8"
    a3 = html[html.index('data-slot="A3"') :]
    assert text_of(a3, "data-stock") == "? / 12"  # never filled through us
    assert f'href="/vending/planograms/{fleet.planogram}"' in html
    chart = re.search(r"data-chart='([^']*)'", html)
    assert chart
    data = json.loads(chart.group(1))
    assert len(data["days"]) == 30
    assert sum(data["units"]) == MONTH[0]
    assert data["units"][-1] == TODAY[0]
    assert data["units"][-4] == 5
    assert text_of(html, "data-total-revenue") == MONTH[1]
    audits = section(html, 'class="audits"')
    assert DAMAGED_WARNING in audits
    assert "damaged" in audits
    assert "accepted" in audits


async def test_products_planogram_routes_and_pick_list_pages(
    app: FastAPI, tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, tenant, Role.MANAGER) as http:
        answers = {name: await http.get(path) for name, path in pages(fleet).items()}
    for name, answer in answers.items():
        assert answer.status_code == 200, (name, answer.text[:500])
        assert "cdn" not in answer.text.lower()
    products = answers["products"].text
    for name, sku in (("Cola", "COLA-33"), ("Gum", "GUM-10")):
        assert name in products
        assert sku in products
    assert 'action="/vending/products"' in products  # a manager may add one

    planogram = answers["planogram"].text
    assert "Planogram v2" in planogram
    assert "current" in planogram
    assert "summer mix" in planogram
    a2 = planogram[planogram.index('<tr data-slot="A2"') :].split("</tr>")[0]
    assert re.sub(r"<[^>]+>", "|", a2).split("|").count("8") == 1  # capacity 8
    assert "Chips" in a2
    assert "1.80" in a2
    assert f'href="/vending/planograms/{fleet.old_planogram}"' in planogram
    async with signed_in(app, tenant, Role.MANAGER) as http:
        old = await http.get(f"/vending/planograms/{fleet.old_planogram}")
    assert "Planogram v1" in old.text
    assert "past version" in old.text

    routes = answers["routes"].text
    north = section(routes, f'data-route="{fleet.route}"')
    assert "North loop" in north
    assert "Lobby snacks" in north
    assert f'href="/service-orders/{fleet.order}"' in north
    assert "driver@" in north
    south = section(routes, f'data-route="{fleet.other_route}"')
    assert "Station drinks" in south
    assert f'href="/service-orders/{fleet.other_order}"' in south

    order = answers["order"].text
    assert "North loop" in order
    assert "issued" in order
    assert 'action="/service-orders/' in order
    assert "/start" in order
    for product, units in (("Cola", 2), ("Chips", 6), ("Water", 10)):
        row = order[order.index(f'data-total="{product}"') :].split("</tr>")[0]
        assert text_of(row, "data-units") == str(units), product
    stop = section(order, f'data-stop="{fleet.machine}"')
    assert "1. Lobby snacks" in stop
    assert "Hall A" in stop
    assert (
        stop.index('data-slot="A1"') < stop.index('data-slot="A2"') < stop.index('data-slot="A3"')
    )
    assert "fill-form" not in stop  # fills are recorded once the order is started


async def test_another_organization_gets_404_for_every_object(
    app: FastAPI, other_tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, other_tenant, Role.ADMIN) as http:
        for name, path in pages(fleet).items():
            if name in ("fleet", "products", "routes"):
                answer = await http.get(path)
                assert answer.status_code == 200
                assert "Lobby snacks" not in answer.text
                assert "North loop" not in answer.text
                assert "Cola" not in answer.text
                continue
            answer = await http.get(path, headers={"Accept": "text/html"})
            assert answer.status_code == 404, name
            assert "text/html" in answer.headers["content-type"]  # the 404 page
        missing = await http.get(f"/vending/machines/{uuid.uuid4()}")
        assert missing.status_code == 404
        malformed = await http.get("/vending/machines/not-an-id")
        assert malformed.status_code == 404


async def test_a_driver_sees_only_their_routes_and_orders(
    app: FastAPI, tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, tenant, Role.DRIVER) as http:
        routes = await http.get("/vending/routes")
        assert routes.status_code == 200
        assert "North loop" in routes.text
        assert "South loop" not in routes.text
        assert f"/service-orders/{fleet.order}" in routes.text
        assert f"/service-orders/{fleet.other_order}" not in routes.text
        nav = routes.text[routes.text.index('class="mainnav"') :].split("</nav>")[0]
        assert re.findall(r'href="([^"]+)"', nav) == ["/vending/routes"]
        mine = await http.get(f"/service-orders/{fleet.order}")
        assert mine.status_code == 200
        assert "Lobby snacks" in mine.text
        machine = await http.get(f"/vending/machines/{fleet.machine}")
        assert machine.status_code == 200
        assert 'href="/devices/' not in machine.text
        assert 'href="/vending/planograms/' not in machine.text  # a page they cannot open
        for path in (
            f"/service-orders/{fleet.other_order}",
            f"/vending/machines/{fleet.other_machine}",
        ):
            refused = await http.get(path, headers={"Accept": "text/html"})
            assert refused.status_code == 404, path
        # The rest of vending (and of the dashboard) sends a driver back to their routes.
        for path in (
            "/vending",
            "/vending/products",
            f"/vending/planograms/{fleet.planogram}",
            "/devices",
        ):
            elsewhere = await http.get(path)
            assert elsewhere.status_code == 303, path
            assert elsewhere.headers["location"] == "/vending/routes"


async def test_a_viewer_gets_no_write_buttons(app: FastAPI, tenant: Tenant, fleet: Fleet) -> None:
    async with signed_in(app, tenant, Role.VIEWER) as http:
        answers = {name: await http.get(path) for name, path in pages(fleet).items()}
    for name, answer in answers.items():
        assert answer.status_code == 200, name
        assert 'method="post" action="/vending' not in answer.text, name
        assert 'action="/service-orders' not in answer.text, name
        assert "hx-post" not in answer.text, name


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def test_a_manager_adds_a_product_with_the_form(
    app: FastAPI, tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, tenant, Role.MANAGER) as http:
        csrf = csrf_of(await http.get("/vending/products"))
        form = {"name": "Lemonade", "sku": "LEM-33", "default_price": "2.20", "case_size": "24"}
        refused = await http.post("/vending/products", data=form)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "CSRF_FAILED"
        added = await http.post("/vending/products", data={**form, "csrf_token": csrf})
        assert added.status_code == 303
        listed = await http.get(added.headers["location"])
        row = listed.text[listed.text.index("Lemonade") :].split("</tr>")[0]
        assert "LEM-33" in row
        assert "2.20" in row
        # Refused input comes back in the form with what is wrong, nothing added.
        again = await http.post("/vending/products", data={**form, "csrf_token": csrf})
        assert again.status_code == 422
        assert 'class="form-errors"' in again.text
        assert "sku:" in again.text
        bad = await http.post(
            "/vending/products",
            data={"name": "Bad", "default_price": "-1", "csrf_token": csrf},
        )
        assert bad.status_code == 422
        assert "default_price:" in bad.text
        assert 'value="-1"' in bad.text  # what was typed is kept
        assert "<td>Bad</td>" not in bad.text
    async with signed_in(app, tenant, Role.VIEWER) as http:
        csrf = csrf_of(await http.get("/vending/products"))
        denied = await http.post("/vending/products", data={"name": "X", "csrf_token": csrf})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "PERMISSION_DENIED"


async def test_the_planogram_page_shows_and_applies_the_suggestion(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    planogram_id = await suggested_cabinet(client, tenant, db)
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get(f"/vending/planograms/{planogram_id}")
        assert page.status_code == 200, page.text[:500]
        diff = section(page.text, "data-suggestion")
        a1 = diff[diff.index('data-change="A1"') :].split("</tr>")[0]
        assert "capacity 8" in a1
        assert "capacity 20" in a1
        assert "sold out 5 of the last 7 visits" in a1
        assert 'data-change="A2"' in diff  # a donor of facings
        assert "Apply as version 2" in diff
        applied = await http.post(
            f"/vending/planograms/{planogram_id}/apply",
            data={"csrf_token": csrf_of(page), "based_on_version": "1"},
        )
        assert applied.status_code == 303, applied.text
        new = await http.get(applied.headers["location"])
        assert "Planogram v2" in new.text
        assert "suggestion" in new.text
        a1_row = new.text[new.text.index('<tr data-slot="A1"') :].split("</tr>")[0]
        assert '<td class="num">20</td>' in a1_row
        stale = await http.post(
            f"/vending/planograms/{planogram_id}/apply",
            data={"csrf_token": csrf_of(page), "based_on_version": "1"},
        )
        assert stale.status_code == 409  # the page was out of date: nothing applied twice
        old = await http.get(f"/vending/planograms/{planogram_id}")
        assert "Suggestions are made for the current version" in old.text
    async with signed_in(app, tenant, Role.VIEWER) as http:
        shown = await http.get(applied.headers["location"])
        assert "/apply" not in shown.text


async def test_too_few_data_says_so_instead_of_suggesting(
    app: FastAPI, tenant: Tenant, fleet: Fleet
) -> None:
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get(f"/vending/planograms/{fleet.planogram}")
    diff = section(page.text, "data-suggestion")
    assert 'data-suggestion-status="insufficient_data"' in diff
    assert "visits: 0 service visits recorded, 3 needed" in diff
    assert "/apply" not in diff


async def suggested_cabinet(client: httpx.AsyncClient, tenant: Tenant, db: Database) -> str:
    """A cabinet whose A1 sells out at 5 of 7 visits (as in test_vending_suggestions); the
    id of its planogram version 1."""
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
    put = await put_planogram(client, tenant, cabinet_id, slots)
    assert put.status_code == 200, put.text
    now = datetime.now(UTC)
    weekly = {"A1": 28, "A2": 4, "A3": 7}
    product_of = {"A1": ids["Cola"], "A2": ids["Chips"], "A3": ids["Nuts"]}
    rows = [
        (
            slot,
            product_of[slot],
            units,
            now - timedelta(days=7 * (week + 1)),
            now - timedelta(days=7 * week),
        )
        for week in range(4)
        for slot, units in weekly.items()
    ]
    await seed_sales(db, tenant, machine["device_id"], cabinet_id, rows)
    visits = [
        (now - timedelta(days=4 * k), {"A1": k < 5, "A2": False, "A3": False}) for k in range(7)
    ]
    await seed_visits(db, tenant, route_id, machine["device_id"], cabinet_id, visits)
    return str(put.json()["id"])


async def test_a_driver_works_the_pick_list_with_page_writes(
    app: FastAPI, tenant: Tenant, fleet: Fleet, db: Database
) -> None:
    order = f"/service-orders/{fleet.order}"
    async with signed_in(app, tenant, Role.DRIVER) as http:
        page = await http.get(order)
        csrf = csrf_of(page)
        htmx = {"HX-Request": "true", "X-CSRF-Token": csrf}
        assert (await http.post(f"{order}/start")).status_code == 403  # no CSRF token
        started = await http.post(f"{order}/start", data={"csrf_token": csrf})
        assert started.status_code == 303
        page = await http.get(order)
        assert page.text.count('class="fill-form"') == 3
        line = fleet.lines["A1"]
        filled = await http.post(f"{order}/lines/{line}", headers=htmx, data={"filled": "4"})
        assert filled.status_code == 200, filled.text
        assert text_of(filled.text, "data-filled") == "4"
        assert filled.text.lstrip().startswith(f'<li class="pick-line done" id="line-{line}"')
        for value, code in (("abc", "VALIDATION_ERROR"), ("11", "ABOVE_CAPACITY")):
            bad = await http.post(f"{order}/lines/{line}", headers=htmx, data={"filled": value})
            assert bad.status_code == 422, value
            assert bad.json()["error"]["code"] == code
        plain = await http.post(
            f"{order}/lines/{fleet.lines['A2']}",
            data={"filled": "5", "sold_out": "1", "csrf_token": csrf},
        )
        assert plain.status_code == 303  # without JavaScript: back to the line
        assert plain.headers["location"] == f"{order}#line-{fleet.lines['A2']}"
        unvisited = await http.post(f"{order}/complete", data={"csrf_token": csrf})
        assert unvisited.status_code == 409
        assert unvisited.json()["error"]["code"] == "VISITS_UNSERVICED"
        bad_cash = await http.post(
            f"{order}/visits/{fleet.machine}/cash", headers=htmx, data={"amount": "ten"}
        )
        assert bad_cash.status_code == 422
        cash = await http.post(
            f"{order}/visits/{fleet.machine}/cash", headers=htmx, data={"amount": "12.5"}
        )
        assert cash.status_code == 200, cash.text
        assert "Recorded 12.50" in cash.text
        other = await http.post(
            f"/service-orders/{fleet.other_order}/start", data={"csrf_token": csrf}
        )
        assert other.status_code == 404
        done = await http.post(f"{order}/complete", data={"csrf_token": csrf})
        assert done.status_code == 303
        page = await http.get(order)
        assert text_of(page.text, "data-order-state") == "completed"
        assert "fill-form" not in page.text
    async with db.session() as session:
        stock = await session.get_one(SlotStock, {"cabinet_id": fleet.cabinet, "slot": "A2"})
        assert (stock.fill_level, stock.sold_since_fill) == (5, 0)


async def test_a_viewer_cannot_work_an_order(app: FastAPI, tenant: Tenant, fleet: Fleet) -> None:
    async with signed_in(app, tenant, Role.VIEWER) as http:
        csrf = csrf_of(await http.get(f"/service-orders/{fleet.order}"))
        refused = await http.post(f"/service-orders/{fleet.order}/start", data={"csrf_token": csrf})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "PERMISSION_DENIED"


def damaged_dex(serial: str, read_at: datetime, vends: int) -> bytes:
    """A well-formed one-audit file with its G85 CRC made wrong (a transmission error)."""
    paid = Counter(value_init=Decimal("1.50") * vends, count_init=vends)
    selection = Selection("A1", Decimal("1.50"), paid=paid)
    raw = write(MachineAudit(serial=serial, selections=[selection], read_at=read_at))
    head, _, tail = raw.partition(b"G85*")
    return head + b"G85*" + (b"0000" if tail[:4] != b"0000" else b"FFFF") + tail[4:]


async def test_a_manager_accepts_or_rejects_a_damaged_audit_on_the_machine_page(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    device_id, token = await new_device(client, tenant, name="Depot")
    read = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    ids = []
    for hours, vends in ((2, 10), (1, 14)):
        sent = await client.post(
            "/api/v1/devices/me/dex",
            headers={"X-Device-Token": token, "Content-Type": "text/plain"},
            content=damaged_dex("SN-9", read - timedelta(hours=hours), vends),
        )
        assert sent.status_code == 200, sent.text
        ids.append(sent.json()["audits"][0]["id"])
    first, second = ids
    page_url = f"/vending/machines/{device_id}"
    async with signed_in(app, tenant, Role.VIEWER) as http:
        assert "/accept" not in (await http.get(page_url)).text
    async with signed_in(app, tenant, Role.MANAGER) as http:
        page = await http.get(page_url)
        for audit_id in ids:
            row = page.text[page.text.index(f'data-audit="{audit_id}"') :].split("</tr>")[0]
            assert "damaged" in row
            assert f'action="/vending/audits/{audit_id}/accept"' in row
        csrf = csrf_of(page)
        accepted = await http.post(f"/vending/audits/{first}/accept", data={"csrf_token": csrf})
        assert accepted.status_code == 303
        assert accepted.headers["location"].startswith(page_url)
        rejected = await http.post(f"/vending/audits/{second}/reject", data={"csrf_token": csrf})
        assert rejected.status_code == 303
        again = await http.post(f"/vending/audits/{second}/accept", data={"csrf_token": csrf})
        assert again.status_code == 409
        page = await http.get(page_url)
    rows = {
        audit_id: page.text[page.text.index(f'data-audit="{audit_id}"') :].split("</tr>")[0]
        for audit_id in ids
    }
    assert "state-audit-accepted" in rows[first]
    assert "state-audit-rejected" in rows[second]
    assert "/accept" not in page.text
    listed = await client.get(
        f"/api/v1/vending/audits/{first}", headers=tenant.headers(Role.VIEWER)
    )
    assert listed.json()["status"] == "accepted"
