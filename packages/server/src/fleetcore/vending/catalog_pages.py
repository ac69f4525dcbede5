"""The catalogue's page writes: add a product, apply a planogram suggestion; and the
suggestion shown on a planogram page as a per-slot diff with each change's reason."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from fleetcore.auth.principal import Role
from fleetcore.dashboard.web import Context, PageWriter, render
from fleetcore.deps import SessionDep
from fleetcore.errors import Conflict
from fleetcore.vending import products, suggestion_service, views
from fleetcore.vending.catalog_schemas import ProductIn, SuggestionOut
from fleetcore.vending.models import PlanogramSlot, Product

router = APIRouter(include_in_schema=False)
PRODUCT_FIELDS = ("name", "sku", "ean", "category", "unit_cost", "default_price", "case_size")


@router.post("/vending/products")
async def add_product(
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    name: Annotated[str, Form(max_length=400)] = "",
    sku: Annotated[str, Form(max_length=200)] = "",
    ean: Annotated[str, Form(max_length=100)] = "",
    category: Annotated[str, Form(max_length=200)] = "",
    unit_cost: Annotated[str, Form(max_length=40)] = "",
    default_price: Annotated[str, Form(max_length=40)] = "",
    case_size: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    """Managers: a new product; the form comes back with its errors (422) when refused."""
    principal.require(Role.MANAGER)
    form = {
        "name": name,
        "sku": sku,
        "ean": ean,
        "category": category,
        "unit_cost": unit_cost,
        "default_price": default_price,
        "case_size": case_size,
    }
    sent: dict[str, object] = {k: v.strip() for k, v in form.items() if v.strip()}
    case_size_text = str(sent.get("case_size", ""))
    if case_size_text.isdecimal():  # a form sends text; the API's count is a strict integer
        sent["case_size"] = int(case_size_text)
    errors: dict[str, str] = {}
    try:
        await products.create_product(session, principal, data=ProductIn.model_validate(sent))
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "form"
            errors.setdefault(field, error["msg"])
    except Conflict as exc:
        errors["sku"] = exc.message
    if not errors:
        return RedirectResponse("/vending/products", status_code=303)
    return render(
        context,
        "vending/products.html",
        status_code=422,
        products=await views.products(session, principal),
        can_write=True,
        form=form,
        errors=errors,
    )


@router.post("/vending/planograms/{planogram_id:uuid}/apply")
async def apply(
    planogram_id: uuid.UUID,
    session: SessionDep,
    principal: PageWriter,
    based_on_version: Annotated[int, Form(ge=1)],
) -> Response:
    """Managers: the cabinet's current suggestion becomes a new planogram version."""
    view = await views.planogram_page(session, principal, planogram_id)
    created = await suggestion_service.apply_suggestion(
        session,
        principal,
        view.cabinet.id,
        based_on_version=based_on_version,
        change_ids=None,
    )
    return RedirectResponse(f"/vending/planograms/{created.id}", status_code=303)


@dataclass(frozen=True, slots=True)
class SlotChange:
    """A slot the suggestion changes: before, after, and the reasons."""

    slot: str
    before: str
    after: str
    reasons: list[str]


def _describe(product: str | None, capacity: int, par: int, price: Decimal | None) -> str:
    money = f"{price:.2f}" if price is not None else "no price"
    return f"{product or 'empty'} · capacity {capacity} · par {par} · {money}"


def slot_diff(
    current: list[tuple[PlanogramSlot, Product | None]], suggestion: SuggestionOut
) -> list[SlotChange]:
    """The slots whose suggested plan differs from the current one, by slot code."""
    now = {
        s.slot: _describe(p.name if p else None, s.capacity, s.par_level, s.price)
        for s, p in current
    }
    reasons: dict[str, list[str]] = {}
    for change in suggestion.changes:
        for code in {change.slot, change.from_slot} - {None}:
            assert code is not None
            reasons.setdefault(code, []).append(change.reason)
    found = []
    for s in suggestion.slots:
        after = _describe(s.product_name, s.capacity, s.par_level, s.price)
        if after != now.get(s.slot) or s.slot in reasons:
            found.append(SlotChange(s.slot, now.get(s.slot, "—"), after, reasons.get(s.slot, [])))
    return found
