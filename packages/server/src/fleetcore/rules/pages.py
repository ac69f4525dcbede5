"""Rule pages: the list, the create and edit form (structured conditions, or JSON for
all/any), delete, and a dry-run preview charted over a device's stored readings."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.deps import BusDep
from fleetcore.alerts.models import Severity
from fleetcore.assets import service as assets
from fleetcore.auth.principal import Principal, Role
from fleetcore.dashboard.web import Context, PageWriter, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import profiles
from fleetcore.devices import service as devices
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.rules import dryrun, form, service
from fleetcore.rules.conditions import needs_of
from fleetcore.rules.index import LiveRule
from fleetcore.rules.models import Rule, managed_by
from fleetcore.rules.router import EngineDep
from fleetcore.rules.schemas import DryRunIn, RuleIn, RulePatch
from fleetcore.telemetry import queries

router = APIRouter(include_in_schema=False)
RANGES = {"1h": 3_600_000, "6h": 6 * 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000}
CHART_POINTS = 10_000  # readings per key drawn in the preview


async def _form(request: Request) -> dict[str, str]:
    """The posted fields as text (repeated fields: the last one)."""
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


async def _scopes(session: AsyncSession, principal: Principal) -> dict[str, list[Any]]:
    """What a rule may watch: devices, profiles and assets of the organization."""
    device_rows, _ = await devices.list_devices(
        session, principal, filters=devices.DeviceFilter(), sort="name", cursor=None, limit=500
    )
    return {
        "devices": device_rows,
        "profiles": await profiles.list_profiles(session, principal, cursor=None, limit=500),
        "assets": await assets.list_assets(
            session, principal, type=None, parent_id=None, cursor=None, limit=500
        ),
    }


def _scope_names(scopes: dict[str, list[Any]]) -> dict[uuid.UUID, tuple[str, str]]:
    names: dict[uuid.UUID, tuple[str, str]] = {}
    for kind, rows in scopes.items():
        for row in rows:
            names[row.id] = (kind.removesuffix("s"), row.name)
    return names


@router.get("/rules")
async def rule_list(session: SessionDep, context: Context) -> HTMLResponse:
    """Rules by name: scope, severity, enabled."""
    principal = principal_of(context)
    rows, _ = await service.list_rules(
        session, principal, enabled=None, device_id=None, cursor=None, limit=500
    )
    return render(
        context,
        "rules/list.html",
        rules=rows,
        scope_names=_scope_names(await _scopes(session, principal)),
        can_write=principal.has(Role.MANAGER),
    )


async def _form_page(
    session: AsyncSession,
    context: dict[str, object],
    *,
    rule: Rule | None,
    fields: dict[str, str],
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    principal = principal_of(context)
    for key in ("user", "organization"):  # a failed write rolled back: load them again
        if context.get(key) is not None:
            await session.refresh(context[key])
    return render(
        context,
        "rules/form.html",
        status_code=status_code,
        rule=rule,
        fields=fields,
        errors=errors or {},
        scopes=await _scopes(session, principal),
        severities=list(Severity),
        kinds=form.KINDS,
        ops=form.OPS,
        pers=form.PERS,
        ranges=RANGES,
        can_write=_writable(principal, rule),
        managed=managed_by(rule) if rule is not None else None,
    )


@router.get("/rules/new")
async def new_rule(session: SessionDep, context: Context) -> HTMLResponse:
    """The empty form (managers)."""
    principal_of(context).require(Role.MANAGER)
    return await _form_page(session, context, rule=None, fields=form.blank_fields())


@router.get("/rules/{rule_id}")
async def rule_page(rule_id: uuid.UUID, session: SessionDep, context: Context) -> HTMLResponse:
    """A rule's form (read-only below managers) and its dry-run preview."""
    rule = await service.get_rule(session, principal_of(context), rule_id)
    return await _form_page(session, context, rule=rule, fields=form.fields_of(rule))


def _writable(principal: Principal, rule: Rule | None) -> bool:
    """Managers change rules, except those another module owns (a watchlist's)."""
    return principal.has(Role.MANAGER) and (rule is None or managed_by(rule) is None)


def _field_of(exc: Invalid | Conflict | NotFound) -> str:
    field = str(exc.details.get("field", "form"))
    if field == "only_device_id":
        return "preview_device"
    return "scope" if field.endswith("_id") else field


@router.post("/rules")
async def create_rule(
    request: Request,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    engine: EngineDep,
) -> Response:
    """Managers: a new rule from the form; errors come back next to the fields (4xx)."""
    principal.require(Role.MANAGER)
    fields = await _form(request)
    try:
        data = RuleIn.model_validate(form.body_of(fields))
        rule = await service.create_rule(session, principal, engine, data=data)
    except form.FormErrors as exc:
        return await _form_page(
            session, context, rule=None, fields=fields, errors=exc.errors, status_code=422
        )
    except ValidationError as exc:
        errors = form.validation_errors(exc).errors
        return await _form_page(
            session, context, rule=None, fields=fields, errors=errors, status_code=422
        )
    except (Invalid, Conflict, NotFound) as exc:
        errors = {_field_of(exc): exc.message}
        return await _form_page(
            session, context, rule=None, fields=fields, errors=errors, status_code=exc.status_code
        )
    return RedirectResponse(f"/rules/{rule.id}?saved=1", status_code=303)


@router.post("/rules/dry-run")
async def preview(
    request: Request, session: SessionDep, context: Context, principal: PageWriter
) -> HTMLResponse:
    """The dry run of the form's rule on one device over a recent range: episodes and the
    values the condition reads, charted. Problems are answered in the preview's place."""
    fields = await _form(request)
    errors: dict[str, str] = {}
    span = RANGES.get(fields.get("preview_range", ""), RANGES["24h"])
    end = int(time.time() * 1000)
    spec: dict[str, Any] = {}
    try:
        device_id = uuid.UUID(fields.get("preview_device", ""))
        if fields.get("rule_id"):  # the saved rule (the read-only page of a non-manager)
            spec = {"rule_id": uuid.UUID(fields["rule_id"])}
        else:  # the form as it stands, saved or not
            body = form.body_of(fields)
            spec = {
                **{k: body[k] for k in ("device_id", "profile_id", "asset_id")},
                "condition": body["condition"],
                "clear_condition": body["clear_condition"],
                "duration_s": body["duration_s"],
            }
    except form.FormErrors as exc:
        errors = exc.errors
    except ValueError:
        errors = {"preview_device": "choose a device to preview on"}
    if errors:
        return render(context, "rules/_preview.html", errors=errors, status_code=422)
    try:
        data = DryRunIn.model_validate(
            {**spec, "start": str(end - span), "end": str(end), "only_device_id": device_id}
        )
        if data.rule_id is not None:
            stored = await service.get_rule(session, principal, data.rule_id)
            if managed_by(stored) is not None:  # fires on plate reads: no telemetry to chart
                raise Invalid("this rule fires on plate reads, not telemetry", code="RULE_MANAGED")
            saved = LiveRule.of(stored)
            keys = sorted(saved.needs.keys)
        else:
            keys = sorted(needs_of(data.condition, data.clear_condition).keys)
        result = await dryrun.dry_run(session, principal, data)
    except ValidationError as exc:
        errors = form.validation_errors(exc).errors
    except (Invalid, NotFound) as exc:
        errors = {_field_of(exc): exc.message}
    if errors:
        return render(context, "rules/_preview.html", errors=errors, status_code=422)
    page = await queries.read_readings(
        session,
        principal,
        device_id=device_id,
        keys=keys,
        start=str(end - span),
        end=str(end),
        limit=CHART_POINTS * max(1, len(keys)),
        cursor=None,
        descending=False,
    )
    series: dict[str, list[list[float]]] = {k: [[], []] for k in keys}
    for reading in page.rows:
        if isinstance(reading.value, int | float) and not isinstance(reading.value, bool):
            series[reading.key][0].append(reading.ts / 1000)
            series[reading.key][1].append(reading.value)
    chart = {
        "start": (end - span) / 1000,
        "end": end / 1000,
        "series": {k: v for k, v in series.items() if v[0]},
        "episodes": [
            {
                "opened": e.opened_at.timestamp(),
                "cleared": e.cleared_at.timestamp() if e.cleared_at else None,
            }
            for e in result.episodes
        ],
    }
    return render(
        context,
        "rules/_preview.html",
        result=result,
        chart=chart,
        keys=keys,
        more=page.next_cursor is not None,
        errors={},
    )


@router.post("/rules/{rule_id}")
async def update_rule(
    request: Request,
    rule_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    engine: EngineDep,
    bus: BusDep,
) -> Response:
    """Managers: save the form; only the fields that changed are sent to the service."""
    principal.require(Role.MANAGER)
    rule = await service.get_rule(session, principal, rule_id)
    before = form.body_of(form.fields_of(rule))
    fields = await _form(request)
    try:
        body = form.body_of(fields)
        changed = {k: v for k, v in body.items() if before.get(k) != v}
        if any(k.endswith("_id") for k in changed):
            changed |= {k: v for k, v in body.items() if k.endswith("_id")}
        data = RulePatch.model_validate(changed)
        await service.update_rule(session, principal, engine, bus, rule_id, data=data)
    except form.FormErrors as exc:
        return await _form_page(
            session, context, rule=rule, fields=fields, errors=exc.errors, status_code=422
        )
    except ValidationError as exc:
        errors = form.validation_errors(exc).errors
        return await _form_page(
            session, context, rule=rule, fields=fields, errors=errors, status_code=422
        )
    except (Invalid, Conflict, NotFound) as exc:
        errors = {_field_of(exc): exc.message}
        await session.refresh(rule)
        return await _form_page(
            session, context, rule=rule, fields=fields, errors=errors, status_code=exc.status_code
        )
    return RedirectResponse(f"/rules/{rule_id}?saved=1", status_code=303)


@router.post("/rules/{rule_id}/delete")
async def delete_rule(
    request: Request,
    rule_id: uuid.UUID,
    session: SessionDep,
    principal: PageWriter,
    engine: EngineDep,
    bus: BusDep,
) -> Response:
    """Managers: delete; htmx removes the row, a plain form goes back to the list."""
    await service.delete_rule(session, principal, engine, bus, rule_id)
    if is_fragment(request):
        return HTMLResponse("")
    return RedirectResponse("/rules", status_code=303)
