"""Rollout pages: the create form, a rollout's page (its head with the buttons the caller's
role allows, progress per state and per stage, the per-device table paged) and its
pause / resume / abort / rollback. Kept current by ota.js on the "ota" live channel, which
asks for the parts again (?part=head|progress|row)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from fleetcore.assets import service as assets
from fleetcore.auth.principal import Principal, Role
from fleetcore.dashboard.web import Context, PageWriter, is_fragment, principal_of, render
from fleetcore.deps import SessionDep
from fleetcore.devices import profiles
from fleetcore.devices import service as devices
from fleetcore.errors import DomainError
from fleetcore.live.hub import LiveHub
from fleetcore.ota import history, packages, rollouts, sections
from fleetcore.ota.deps import HubDep
from fleetcore.ota.models import DeviceState, RolloutStatus
from fleetcore.ota.schemas import RolloutIn, RolloutOut

router = APIRouter(include_in_schema=False)
DEVICE_ROWS = 50
CHOICES = 500  # packages, profiles, assets and devices offered by the form
TARGETS = ("devices", "profile", "asset", "labels")
# Shown on every rollout, with or without devices in them; other states once they have some.
MAIN_STATES = (DeviceState.QUEUED, DeviceState.UPDATED, DeviceState.FAILED)
DONE = (DeviceState.UPDATED, DeviceState.FAILED, DeviceState.CANCELLED, DeviceState.ROLLED_BACK)

Action = Callable[[AsyncSession, Principal, uuid.UUID, LiveHub], Awaitable[RolloutOut]]
ACTIONS: dict[str, tuple[Action, Role]] = {
    "pause": (rollouts.pause, Role.OPERATOR),
    "resume": (rollouts.resume, Role.OPERATOR),
    "abort": (rollouts.abort, Role.MANAGER),
    "rollback": (rollouts.rollback, Role.MANAGER),
}
_ALLOWED_FROM = {
    "pause": (RolloutStatus.ACTIVE,),
    "resume": (RolloutStatus.PAUSED,),
    "abort": RolloutStatus.OPEN,
    "rollback": (*RolloutStatus.OPEN, RolloutStatus.COMPLETED, RolloutStatus.ABORTED),
}


def actions_for(principal: Principal, rollout: RolloutOut) -> list[str]:
    """The buttons a rollout's page shows: what the caller's role and its status allow."""
    return [
        name
        for name, (_, role) in ACTIONS.items()
        if principal.has(role) and rollout.status in _ALLOWED_FROM[name]
    ]


def states_shown(rollout: RolloutOut) -> list[str]:
    """States with a bar: the main ones always, others once a device is in them."""
    return [s for s in DeviceState.ALL if s in MAIN_STATES or rollout.counts.get(s)]


def _part_values(principal: Principal, rollout: RolloutOut) -> dict[str, Any]:
    return {
        "rollout": rollout,
        "actions": actions_for(principal, rollout),
        "states": states_shown(rollout),
        "done_states": DONE,
    }


# -- the create form -----------------------------------------------------------------------


async def _form_page(
    session: AsyncSession,
    context: dict[str, object],
    *,
    fields: dict[str, Any],
    errors: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    principal = principal_of(context)
    for key in ("user", "organization"):  # a refused write rolled back: load them again
        if context.get(key) is not None:
            await session.refresh(context[key])
    package_rows, _ = await packages.list_packages(
        session, principal, kind=None, cursor=None, limit=CHOICES
    )
    device_rows, _ = await devices.list_devices(
        session,
        principal,
        filters=devices.DeviceFilter(),
        sort="name",
        cursor=None,
        limit=CHOICES,
    )
    return render(
        context,
        "ota/rollout_form.html",
        status_code=status_code,
        fields=fields,
        errors=errors or [],
        packages=package_rows,
        devices=device_rows,
        profiles=await profiles.list_profiles(session, principal, cursor=None, limit=CHOICES),
        assets=await assets.list_assets(
            session, principal, type=None, parent_id=None, cursor=None, limit=CHOICES
        ),
        targets=TARGETS,
    )


BLANK: dict[str, Any] = {
    "target_type": "devices",
    "strategy": "all",
    "unit": "percent",
    "stages": "",
    "pause_s": "0",
    "max_failure_percent": "100",
    "device_ids": [],
}


@router.get("/ota/rollouts/new")
async def new_rollout(
    session: SessionDep,
    context: Context,
    package: Annotated[uuid.UUID | None, Query()] = None,
) -> HTMLResponse:
    """The empty form (managers); ?package= chooses the package."""
    principal_of(context).require(Role.MANAGER)
    fields = {**BLANK, "package_id": str(package) if package else ""}
    return await _form_page(session, context, fields=fields)


class FormErrors(Exception):
    """The form's fields cannot make a rollout: messages for people."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__(errors)
        self.errors = errors


def _fields(form: FormData) -> dict[str, Any]:
    fields: dict[str, Any] = {
        k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"
    }
    fields["device_ids"] = [v for v in form.getlist("device_ids") if isinstance(v, str)]
    return fields


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormErrors([f"{name} must be a number"]) from None


def body_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The API body (RolloutIn) the form's fields describe."""
    target_type = fields.get("target_type", "devices")
    target: dict[str, Any]
    if target_type == "profile":
        target = {"profile_id": fields.get("profile_id") or None}
    elif target_type == "asset":
        target = {"asset_id": fields.get("asset_id") or None}
    elif target_type == "labels":
        labels = [t.strip() for t in str(fields.get("labels", "")).split(",") if t.strip()]
        target = {"labels": labels}
    else:
        target = {"device_ids": list(fields.get("device_ids", []))}
    strategy: dict[str, Any] = {"type": "all"}
    if fields.get("strategy") == "staged":
        raw = [t.strip() for t in str(fields.get("stages", "")).split(",") if t.strip()]
        if not all(t.isdigit() for t in raw):
            raise FormErrors(["stages: whole numbers separated by commas, e.g. 10, 50, 100"])
        strategy = {
            "type": "staged",
            "stages": [int(t) for t in raw],
            "unit": fields.get("unit", "percent"),
            "pause_s": int(_number(str(fields.get("pause_s") or "0"), "pause")),
        }
    percent = _number(str(fields.get("max_failure_percent") or "100"), "maximum failure rate")
    return {
        "package_id": fields.get("package_id") or None,
        "name": (str(fields.get("name", "")).strip() or None),
        "target": target,
        "strategy": strategy,
        "max_failure_rate": percent / 100,
    }


def _messages(exc: ValidationError) -> list[str]:
    found = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "form"
        found.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return found


@router.post("/ota/rollouts")
async def create_rollout(
    request: Request,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    hub: HubDep,
) -> Response:
    """Managers: start the rollout the form describes; refusals come back above the form."""
    principal.require(Role.MANAGER)
    fields = _fields(await request.form())
    try:
        data = RolloutIn.model_validate(body_of(fields))
        rollout = await rollouts.create_rollout(session, principal, data, hub)
    except FormErrors as exc:
        return await _form_page(session, context, fields=fields, errors=exc.errors, status_code=422)
    except ValidationError as exc:
        errors = _messages(exc)
        return await _form_page(session, context, fields=fields, errors=errors, status_code=422)
    except DomainError as exc:
        if exc.status_code == 403:
            raise
        return await _form_page(
            session, context, fields=fields, errors=[exc.message], status_code=exc.status_code
        )
    return RedirectResponse(f"/ota/rollouts/{rollout.id}", status_code=303)


# -- one rollout -----------------------------------------------------------------------------


Part = Literal["head", "progress", "row"]


@router.get("/ota/rollouts/{rollout_id}")
async def rollout_page(
    rollout_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    part: Part | None = None,
    state: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> HTMLResponse:
    """Status and buttons, progress per state and per stage, the devices (paged)."""
    principal = principal_of(context)
    rollout = await rollouts.get_rollout(session, principal, rollout_id)
    values = _part_values(principal, rollout)
    if part is not None:
        return render(context, f"ota/_rollout_{part}.html", **values)
    rows, next_cursor = await rollouts.list_devices(
        session,
        principal,
        rollout_id,
        state=state or None,
        cursor=cursor or None,
        limit=DEVICE_ROWS,
    )
    names = await history.device_names(session, principal, [r.device_id for r in rows])
    return render(
        context,
        "ota/rollout.html",
        **values,
        device_rows=rows,
        names=names,
        next_cursor=next_cursor,
        state=state or "",
        all_states=DeviceState.ALL,
    )


@router.get("/ota/devices/{device_id}/updates")
async def device_updates(
    device_id: uuid.UUID, session: SessionDep, context: Context
) -> HTMLResponse:
    """The device page's firmware and software card alone (its live refresh)."""
    principal = principal_of(context)
    device = await devices.get_device(session, principal, device_id)
    values: dict[str, Any] = await sections.device_section(session, principal, device)
    return render(context, "ota/_device_updates.html", device=device, **values)


@router.post("/ota/rollouts/{rollout_id}/{action}")
async def rollout_action(
    request: Request,
    rollout_id: uuid.UUID,
    action: Literal["pause", "resume", "abort", "rollback"],
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    hub: HubDep,
) -> Response:
    """Pause or resume (operators), abort or roll back (managers); htmx gets the new head,
    a refusal (409: not in a state for it) the error the page flashes."""
    change, _ = ACTIONS[action]
    rollout = await change(session, principal, rollout_id, hub)
    if is_fragment(request):
        return render(context, "ota/_rollout_head.html", **_part_values(principal, rollout))
    return RedirectResponse(f"/ota/rollouts/{rollout_id}", status_code=303)
