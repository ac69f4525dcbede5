"""A manager's review of a damaged audit from the machine page: accept it (accounted) or
reject it (a foreign one too), through the same service as the REST API."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from fleetcore.dashboard.web import PageWriter
from fleetcore.deps import SessionDep
from fleetcore.vending import audits
from fleetcore.vending.audit_router import SeriesPipeline

router = APIRouter(include_in_schema=False)


@router.post("/vending/audits/{audit_id:int}/accept")
async def accept(
    audit_id: int, session: SessionDep, principal: PageWriter, pipeline: SeriesPipeline
) -> RedirectResponse:
    """Managers: a damaged audit is accounted after all."""
    audit = await audits.review_audit(session, principal, audit_id, accept=True, pipeline=pipeline)
    return RedirectResponse(f"/vending/machines/{audit.device_id}#audits-h", status_code=303)


@router.post("/vending/audits/{audit_id:int}/reject")
async def reject(
    audit_id: int, session: SessionDep, principal: PageWriter, pipeline: SeriesPipeline
) -> RedirectResponse:
    """Managers: a damaged or foreign audit is set aside for good."""
    audit = await audits.review_audit(session, principal, audit_id, accept=False, pipeline=pipeline)
    return RedirectResponse(f"/vending/machines/{audit.device_id}#audits-h", status_code=303)
