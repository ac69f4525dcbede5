"""The plan page: admins see their organization's plan and use; superusers assign plans."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fleetcore.auth import users
from fleetcore.dashboard.web import Context, PageWriter, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.errors import Invalid
from fleetcore.plans import service
from fleetcore.plans.deps import MeterDep, PlanChangesDep

router = APIRouter(include_in_schema=False)


@router.get("/plan")
async def plan_page(session: SessionDep, context: Context, meter: MeterDep) -> HTMLResponse:
    """The caller's organization's plan and use; for a superuser, every organization's plan."""
    principal = principal_of(context)
    mine = None
    if principal.organization_id is not None:
        mine = await service.organization_plan(
            session, principal, principal.organization_id, meter=meter
        )
    else:
        principal.require_superuser()
    plans, organizations, assigned = [], [], {}
    if principal.is_superuser:
        plans = list(await service.list_plans(session, principal))
        organizations = await users.list_organizations(session, principal)
        assigned = await service.assignments(session, principal)
    return render(
        context,
        "plans/plan.html",
        mine=mine,
        plans=plans,
        organizations=organizations,
        assigned=assigned,
    )


@router.post("/plan/assign")
async def assign(
    session: SessionDep,
    principal: PageWriter,
    changes: PlanChangesDep,
    organization_id: Annotated[str, Form(max_length=36)],
    plan_id: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    """Superusers: put an organization on a plan (empty: the default, unlimited)."""
    try:
        org = uuid.UUID(organization_id)
        plan = uuid.UUID(plan_id) if plan_id else None
    except ValueError:
        raise Invalid("not an id", code="VALIDATION_ERROR") from None
    await service.assign_plan(session, principal, org, plan_id=plan)
    await changes.reload()
    return RedirectResponse("/plan", status_code=303)
