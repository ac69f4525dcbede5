"""Rules API: create, list, read, change, delete, and the dry run."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from fleetcore.alerts.deps import BusDep
from fleetcore.auth.deps import PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.rules import dryrun, service
from fleetcore.rules.engine import RulesEngine
from fleetcore.rules.schemas import DryRunIn, DryRunOut, RuleIn, RuleOut, RulePatch

router = APIRouter(prefix="/api/v1", tags=["rules"])


def _engine(request: Request) -> RulesEngine:
    engine: RulesEngine = request.app.state.rules
    return engine


EngineDep = Annotated[RulesEngine, Depends(_engine)]


@router.post(
    "/rules",
    status_code=status.HTTP_201_CREATED,
    summary="Create a rule",
)
async def create_rule(
    data: RuleIn, session: SessionDep, principal: PrincipalDep, engine: EngineDep
) -> RuleOut:
    """Managers and above. Evaluated from the next reading on."""
    rule = await service.create_rule(session, principal, engine, data=data)
    return RuleOut.model_validate(rule)


@router.get("/rules", summary="List rules")
async def list_rules(
    session: SessionDep,
    principal: PrincipalDep,
    enabled: bool | None = None,
    device_id: uuid.UUID | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 100,
) -> Page[RuleOut]:
    """By name."""
    rows, next_cursor = await service.list_rules(
        session, principal, enabled=enabled, device_id=device_id, cursor=cursor, limit=limit
    )
    return Page(items=[RuleOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/rules/dry-run", summary="Evaluate a rule over stored telemetry")
async def dry_run(data: DryRunIn, session: SessionDep, principal: PrincipalDep) -> DryRunOut:
    """When a rule (saved, or given here) would have opened, repeated and cleared alerts."""
    return await dryrun.dry_run(session, principal, data)


@router.get("/rules/{rule_id:uuid}", summary="A rule")
async def get_rule(rule_id: uuid.UUID, session: SessionDep, principal: PrincipalDep) -> RuleOut:
    """One rule of the caller's organization."""
    return RuleOut.model_validate(await service.get_rule(session, principal, rule_id))


@router.patch("/rules/{rule_id:uuid}", summary="Change a rule")
async def update_rule(
    rule_id: uuid.UUID,
    data: RulePatch,
    session: SessionDep,
    principal: PrincipalDep,
    engine: EngineDep,
    bus: BusDep,
) -> RuleOut:
    """Managers and above. Disabling clears the rule's open alerts."""
    rule = await service.update_rule(session, principal, engine, bus, rule_id, data=data)
    return RuleOut.model_validate(rule)


@router.delete(
    "/rules/{rule_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a rule",
)
async def delete_rule(
    rule_id: uuid.UUID, session: SessionDep, principal: PrincipalDep, engine: EngineDep, bus: BusDep
) -> None:
    """Managers and above. Its open alerts are cleared; past alerts stay."""
    await service.delete_rule(session, principal, engine, bus, rule_id)
