"""The pick list's writes: start, record a fill, record cash, complete.

Plain form posts (answered with a redirect back to the pick list) or htmx (answered with
the changed line or cash form); the service-order services decide who may do what (the
order's driver or a manager) and in which state, as they do for the REST API.
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from fleetcore.dashboard.web import AnyContext, AnyPageWriter, is_fragment, render
from fleetcore.deps import SessionDep
from fleetcore.errors import Invalid
from fleetcore.vending import fills, route_views, service_orders
from fleetcore.vending.service_schemas import FillIn, VisitIn

router = APIRouter(include_in_schema=False)


def _back(order_id: uuid.UUID, anchor: str = "") -> RedirectResponse:
    return RedirectResponse(f"/service-orders/{order_id}{anchor}", status_code=303)


@router.post("/service-orders/{order_id:uuid}/start")
async def start(order_id: uuid.UUID, session: SessionDep, principal: AnyPageWriter) -> Response:
    """issued → in progress (the route's driver, or a manager)."""
    await service_orders.start_order(session, principal, order_id)
    return _back(order_id)


@router.post("/service-orders/{order_id:uuid}/complete")
async def complete(
    order_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPageWriter,
    skip_unvisited: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """in progress → completed; machines without a visit only when the driver says so."""
    await service_orders.complete_order(
        session, principal, order_id, skip_unvisited=skip_unvisited == "1"
    )
    return _back(order_id)


@router.post("/service-orders/{order_id:uuid}/lines/{line_id:int}")
async def fill(
    request: Request,
    order_id: uuid.UUID,
    line_id: int,
    session: SessionDep,
    context: AnyContext,
    principal: AnyPageWriter,
    filled: Annotated[str, Form(max_length=12)] = "",
    sold_out: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """What was put in a slot (and whether it was found sold out); resets its stock."""
    try:
        data = FillIn(filled=int(filled), sold_out=sold_out == "1")
    except (ValueError, ValidationError):
        raise Invalid(
            "the filled quantity must be a whole number from 0",
            code="VALIDATION_ERROR",
            details={"field": "filled"},
        ) from None
    await fills.record_fill(session, principal, order_id, line_id, data=data)
    if not is_fragment(request):
        return _back(order_id, f"#line-{line_id}")
    pick = await route_views.pick_list(session, principal, order_id)
    line = route_views.find_line(pick, line_id)
    return render(context, "vending/_pick_line.html", pick=pick, line=line, can_fill=True)


@router.post("/service-orders/{order_id:uuid}/visits/{device_id:uuid}/cash")
async def cash(
    request: Request,
    order_id: uuid.UUID,
    device_id: uuid.UUID,
    session: SessionDep,
    context: AnyContext,
    principal: AnyPageWriter,
    amount: Annotated[str, Form(max_length=24)] = "",
) -> Response:
    """The cash taken from a machine (0 when none); marks the machine visited."""
    try:
        data = VisitIn(cash_collected=Decimal(amount.strip() or "x"))
    except (InvalidOperation, ValidationError):
        raise Invalid(
            "cash must be an amount from 0, e.g. 12.50",
            code="VALIDATION_ERROR",
            details={"field": "amount"},
        ) from None
    await fills.record_visit(session, principal, order_id, device_id, data=data)
    if not is_fragment(request):
        return _back(order_id, f"#cash-{device_id}")
    pick = await route_views.pick_list(session, principal, order_id)
    stop = route_views.find_stop(pick, device_id)
    return render(context, "vending/_cash.html", pick=pick, stop=stop)
