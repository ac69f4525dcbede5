"""Vending pages over HTTP: the figures they show, organization and driver scope, roles."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for
from tests.support.devices import new_device
from tests.support.tenants import Tenant
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
