"""Vending pages: the fleet, a machine, products, a planogram, routes and a pick list.

Thin: each page loads what it shows from vending.views / vending.route_views (scoped by
vending.scope) and writes through the vending services. The routes and service-order pages
(and a machine of their routes) are open to route drivers; the others send them to their
routes, as every page outside vending does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fleetcore.auth.principal import Principal, Role
from fleetcore.dashboard.web import AnyContext, Context, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.vending import (
    catalog_pages,
    order_pages,
    review_pages,
    route_views,
    suggestion_service,
    views,
)

router = APIRouter(include_in_schema=False)
router.include_router(catalog_pages.router)
router.include_router(order_pages.router)
router.include_router(review_pages.router)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/vending")
async def fleet(session: SessionDep, context: Context) -> HTMLResponse:
    """Fleet sales today / 7 d / 30 d, best and worst products, machines needing a visit."""
    overview = await views.overview(session, principal_of(context), now=_now())
    return render(context, "vending/index.html", overview=overview)


@router.get("/vending/machines/{device_id:uuid}")
async def machine(device_id: uuid.UUID, session: SessionDep, context: AnyContext) -> HTMLResponse:
    """A machine's cabinets (slot grids), sales per day, and audits with their warnings."""
    principal = principal_of(context)
    view = await views.machine_page(session, principal, device_id, now=_now())
    return render(
        context,
        "vending/machine.html",
        view=view,
        chart={
            "days": [d.isoformat() for d in view.days],
            "units": view.units,
            "revenue": [float(r) for r in view.revenue],
        },
        can_review=principal.has(Role.MANAGER),
    )


@router.get("/vending/products")
async def products(session: SessionDep, context: Context) -> HTMLResponse:
    """The product catalogue; managers add products."""
    principal = principal_of(context)
    return render(
        context,
        "vending/products.html",
        products=await views.products(session, principal),
        can_write=principal.has(Role.MANAGER),
        form={},
        errors={},
    )


@router.get("/vending/planograms/{planogram_id:uuid}")
async def planogram(planogram_id: uuid.UUID, session: SessionDep, context: Context) -> HTMLResponse:
    """One planogram version, its history, and the cabinet's current suggestion."""
    principal = principal_of(context)
    view = await views.planogram_page(session, principal, planogram_id)
    # Advice is for the current version only: a past one is history.
    suggestion = (
        await suggestion_service.cabinet_suggestion(session, principal, view.cabinet.id)
        if view.current
        else None
    )
    return render(
        context,
        "vending/planogram.html",
        view=view,
        suggestion=suggestion,
        changes=catalog_pages.slot_diff(view.slots, suggestion) if suggestion else [],
        can_apply=principal.has(Role.MANAGER),
    )


@router.get("/vending/routes")
async def routes(session: SessionDep, context: AnyContext) -> HTMLResponse:
    """The routes the caller may see (a driver: theirs), with machines and service orders."""
    found = await route_views.routes_page(session, principal_of(context), today=_now().date())
    return render(context, "vending/routes.html", routes=found)


@router.get("/service-orders/{order_id:uuid}")
async def service_order(
    order_id: uuid.UUID, session: SessionDep, context: AnyContext
) -> HTMLResponse:
    """The pick list a driver works from on a phone."""
    principal = principal_of(context)
    pick = await route_views.pick_list(session, principal, order_id)
    can_work = _works_orders(principal)
    return render(
        context,
        "vending/service_order.html",
        pick=pick,
        can_work=can_work,
        can_fill=can_work and pick.order.state == "in_progress",
    )


def _works_orders(principal: Principal) -> bool:
    """Who gets the start, fill and complete controls: a driver (of this route: the order
    loaded) or a manager; the service decides again on each write."""
    return principal.is_driver or principal.has(Role.MANAGER)
