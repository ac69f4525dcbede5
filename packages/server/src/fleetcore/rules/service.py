"""Rules for users: create, list, read, change, delete. The engine picks up every change."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service as alerts
from fleetcore.alerts.events import AlertBus, AlertChange
from fleetcore.assets import service as assets
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict
from fleetcore.devices import profiles
from fleetcore.devices import service as devices
from fleetcore.errors import Conflict, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.rules.models import Rule, RuleState, managed_by
from fleetcore.rules.schemas import RuleIn, RulePatch

SCOPES = ("device_id", "profile_id", "asset_id")
# Changing these restarts evaluation (pending durations are dropped; open alerts stay).
_EVALUATION = {"condition", "clear_condition", "duration_s", *SCOPES}


class RuleListener(Protocol):
    """The rules engine, told after a rule change committed."""

    async def reload(self) -> None: ...


def _not_found() -> NotFound:
    return NotFound("rule not found", code="RULE_NOT_FOUND")


def refuse_managed(rule: Rule) -> None:
    """Conflict for a rule another module owns (a watchlist's): change it there."""
    owner = managed_by(rule)
    if owner is not None:
        raise Conflict(
            f"this rule belongs to a {owner}; change the {owner} instead",
            code="RULE_MANAGED",
            details={"owner": owner},
        )


async def check_scope(session: AsyncSession, principal: Principal, values: dict[str, Any]) -> None:
    """The scope object must be the caller organization's (404 names the field otherwise)."""
    if values.get("device_id"):
        await devices.get_device(session, principal, values["device_id"])
    if values.get("profile_id"):
        await profiles.get_profile(session, principal, values["profile_id"])
    if values.get("asset_id"):
        await assets.get_asset(session, principal, values["asset_id"])


def _audit(session: AsyncSession, principal: Principal, action: str, rule: Rule) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=rule.organization_id,
        target_type="rule",
        target_id=rule.id,
        details={"name": rule.name, "severity": rule.severity, "enabled": rule.enabled},
    )


async def _flush_named(session: AsyncSession, name: str) -> None:
    """Flush the rule; a name the organization already uses is a 409."""
    await flush_or_conflict(
        session,
        Conflict(
            f"a rule named {name!r} exists already",
            code="RULE_NAME_TAKEN",
            details={"field": "name"},
        ),
    )


async def create_rule(
    session: AsyncSession, principal: Principal, engine: RuleListener, *, data: RuleIn
) -> Rule:
    """A new rule (managers); evaluated from the next reading on."""
    principal.require(Role.MANAGER)
    values = data.model_dump(mode="json", exclude_none=True)
    for scope in SCOPES:
        values[scope] = getattr(data, scope)
    await check_scope(session, principal, values)
    rule = Rule(organization_id=principal.org_id, **values)
    session.add(rule)
    await _flush_named(session, data.name)
    _audit(session, principal, "rule.create", rule)
    await session.commit()
    await engine.reload()
    return rule


async def get_rule(session: AsyncSession, principal: Principal, rule_id: uuid.UUID) -> Rule:
    """One rule of the caller's organization."""
    rule = await session.scalar(
        select(Rule).where(Rule.id == rule_id, Rule.organization_id == principal.org_id)
    )
    if rule is None:
        raise _not_found()
    return rule


async def list_rules(
    session: AsyncSession,
    principal: Principal,
    *,
    enabled: bool | None,
    device_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Rule], str | None]:
    """The organization's rules by name."""
    query = select(Rule).where(Rule.organization_id == principal.org_id)
    if enabled is not None:
        query = query.where(Rule.enabled == enabled)
    if device_id is not None:
        query = query.where(Rule.device_id == device_id)
    query = paginate(query, sort=Rule.name, id_column=Rule.id, cursor=cursor, limit=limit)
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="name")


async def update_rule(
    session: AsyncSession,
    principal: Principal,
    engine: RuleListener,
    bus: AlertBus,
    rule_id: uuid.UUID,
    *,
    data: RulePatch,
) -> Rule:
    """Change a rule (managers). Disabling clears its open alerts; a new condition or scope
    restarts pending durations."""
    principal.require(Role.MANAGER)
    rule = await get_rule(session, principal, rule_id)
    refuse_managed(rule)
    given = data.model_dump(mode="json", exclude_unset=True)
    if any(s in given for s in SCOPES):
        for scope in SCOPES:
            given[scope] = getattr(data, scope)
        await check_scope(session, principal, given)
    changes: list[AlertChange] = []
    if given.get("enabled") is False and rule.enabled:
        changes = await alerts.close_for_rule(session, rule, "rule_disabled")
    elif _EVALUATION & given.keys():
        await session.execute(
            delete(RuleState).where(RuleState.rule_id == rule.id, RuleState.alert_id.is_(None))
        )
    for field, value in given.items():
        setattr(rule, field, value)
    await _flush_named(session, rule.name)
    _audit(session, principal, "rule.update", rule)
    await session.commit()
    bus.committed(changes)
    await engine.reload()
    return rule


async def delete_rule(
    session: AsyncSession,
    principal: Principal,
    engine: RuleListener,
    bus: AlertBus,
    rule_id: uuid.UUID,
) -> None:
    """Delete a rule (managers); its open alerts are cleared, its history kept."""
    principal.require(Role.MANAGER)
    rule = await get_rule(session, principal, rule_id)
    refuse_managed(rule)
    changes = await alerts.close_for_rule(session, rule, "rule_deleted")
    _audit(session, principal, "rule.delete", rule)
    await session.delete(rule)
    await session.commit()
    bus.committed(changes)
    await engine.reload()
