"""Plans API: superusers define plans and assign them; admins read their organization's."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.plans import service
from fleetcore.plans.deps import MeterDep, PlanChangesDep
from fleetcore.plans.schemas import (
    AssignmentIn,
    LimitUse,
    OrganizationPlanOut,
    PlanIn,
    PlanOut,
)

router = APIRouter(prefix="/api/v1", tags=["plans"])


def _view_out(view: service.PlanView) -> OrganizationPlanOut:
    return OrganizationPlanOut(
        organization_id=view.organization_id,
        plan=PlanOut.model_validate(view.plan) if view.plan else None,
        assigned_at=view.assigned_at,
        usage=[LimitUse(limit=limit.value, max=top, used=used) for limit, top, used in view.usage],
    )


@router.post("/plans", status_code=status.HTTP_201_CREATED, summary="Create a plan (superusers)")
async def create_plan(body: PlanIn, session: SessionDep, principal: PrincipalDep) -> PlanOut:
    """Each limit null = unlimited; audited."""
    return PlanOut.model_validate(await service.create_plan(session, principal, data=body))


@router.get("/plans", summary="List plans (superusers)")
async def list_plans(session: SessionDep, principal: PrincipalDep) -> list[PlanOut]:
    """By name."""
    return [PlanOut.model_validate(p) for p in await service.list_plans(session, principal)]


@router.get("/plans/{plan_id:uuid}", summary="Get a plan (superusers)")
async def get_plan(plan_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> PlanOut:
    """One plan."""
    return PlanOut.model_validate(await service.get_plan(session, principal, plan_id))


@router.put("/plans/{plan_id:uuid}", summary="Change a plan (superusers)")
async def update_plan(
    plan_id: uuid.UUID,
    body: PlanIn,
    session: SessionDep,
    principal: PrincipalDep,
    changes: PlanChangesDep,
) -> PlanOut:
    """Its organizations follow at once here, within seconds in other processes; audited."""
    plan = await service.update_plan(session, principal, plan_id, data=body)
    await changes.reload()
    return PlanOut.model_validate(plan)


@router.delete(
    "/plans/{plan_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a plan no organization is on (superusers)",
)
async def delete_plan(plan_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> Response:
    """409 PLAN_IN_USE while an organization is on it; audited."""
    await service.delete_plan(session, principal, plan_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put(
    "/organizations/{organization_id:uuid}/plan",
    summary="Assign an organization's plan (superusers)",
)
async def assign_plan(
    organization_id: uuid.UUID,
    body: AssignmentIn,
    session: SessionDep,
    principal: PrincipalDep,
    changes: PlanChangesDep,
    meter: MeterDep,
) -> OrganizationPlanOut:
    """plan_id null puts it back on the default (unlimited); audited."""
    await service.assign_plan(session, principal, organization_id, plan_id=body.plan_id)
    await changes.reload()
    view = await service.organization_plan(session, principal, organization_id, meter=meter)
    return _view_out(view)


@router.get(
    "/organizations/{organization_id:uuid}/plan",
    summary="An organization's plan and its use (its admins, superusers)",
)
async def get_organization_plan(
    organization_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, meter: MeterDep
) -> OrganizationPlanOut:
    """plan null: the default, unlimited."""
    view = await service.organization_plan(session, principal, organization_id, meter=meter)
    return _view_out(view)


@router.get("/organizations/me/plan", summary="The caller's organization's plan and use (admins)")
async def get_my_plan(
    session: SessionDep, principal: PrincipalDep, meter: MeterDep
) -> OrganizationPlanOut:
    """plan null: the default, unlimited."""
    view = await service.organization_plan(session, principal, principal.org_id, meter=meter)
    return _view_out(view)
