"""OTA pages: /ota (packages with the upload form, signing keys, rollouts) and the writes
on packages and keys. Rollout pages: ota/rollout_pages.py.

Writes answer htmx with the card they changed (a refusal shown in it, with its 4xx status)
and a plain form post with the page again (a refusal) or a redirect (done).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from fleetcore.auth.deps import CSRF_HEADER
from fleetcore.auth.principal import Principal, Role
from fleetcore.body_limit import body_limit
from fleetcore.config import OTA_MAX_PACKAGE_MB_CEILING
from fleetcore.dashboard.web import (
    Context,
    PageWriter,
    is_fragment,
    principal_of,
    render,
    require_csrf,
)
from fleetcore.deps import SessionDep, SettingsDep
from fleetcore.devices import profiles
from fleetcore.errors import DomainError
from fleetcore.ota import packages, rollouts
from fleetcore.ota.deps import StoreDep
from fleetcore.ota.packages import FRAMING_BYTES, MIB
from fleetcore.ota.schemas import KeyIn

router = APIRouter(include_in_schema=False)
LIST_ROWS = 50
CSRF_FIELD = "csrf_token"


async def _reload(session: AsyncSession, context: dict[str, object]) -> None:
    """A refused write rolled the session back: load what the base template shows again."""
    for key in ("user", "organization"):
        if context.get(key) is not None:
            await session.refresh(context[key])


async def _values(session: AsyncSession, principal: Principal) -> dict[str, Any]:
    """Everything /ota shows."""
    package_rows, _ = await packages.list_packages(
        session, principal, kind=None, cursor=None, limit=LIST_ROWS
    )
    rollout_rows, _ = await rollouts.list_rollouts(session, principal, cursor=None, limit=LIST_ROWS)
    return {
        "packages": package_rows,
        "keys": await packages.list_keys(session, principal),
        "rollouts": [await rollouts.describe(session, r) for r in rollout_rows],
        "profiles": await profiles.list_profiles(session, principal, cursor=None, limit=500),
        "can_upload": principal.has(Role.MANAGER),
        "can_sign": principal.has(Role.ADMIN),
    }


async def _page(
    session: AsyncSession,
    context: dict[str, object],
    *,
    fragment: str | None = None,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """/ota whole, or one of its cards (an htmx write's answer)."""
    values = await _values(session, principal_of(context))
    template = f"ota/_{fragment}.html" if fragment else "ota/index.html"
    return render(context, template, status_code=status_code, **values, **extra)


@router.get("/ota")
async def ota_page(session: SessionDep, context: Context) -> HTMLResponse:
    """Packages, signing keys and rollouts of the organization."""
    return await _page(session, context)


# -- packages ----------------------------------------------------------------------------


def _without_csrf(form: FormData) -> FormData:
    """The upload's fields as the API takes them: the page's token is not one of them."""
    return FormData([(k, v) for k, v in form.multi_items() if k != CSRF_FIELD])


def _typed(form: FormData) -> dict[str, str]:
    """The text fields typed into the form, to show them again beside a refusal."""
    return {k: v for k, v in form.multi_items() if isinstance(v, str) and k != CSRF_FIELD}


@router.post("/ota/packages")
@body_limit(OTA_MAX_PACKAGE_MB_CEILING * MIB + FRAMING_BYTES)
async def upload_package(
    request: Request,
    session: SessionDep,
    context: Context,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """Managers: store an uploaded package; a refusal is shown above the form (4xx)."""
    principal = principal_of(context)
    header = request.headers.get(CSRF_HEADER)
    if header is not None:  # htmx: refused before a byte of the file is read
        require_csrf(settings, principal, header)
    principal.require(Role.MANAGER)
    try:
        form = await packages.read_upload(request, settings.ota_max_package_mb)
    except DomainError as exc:  # too large, or not a multipart body: nothing was read
        return await _upload_refusal(request, session, context, exc, {})
    try:
        if header is None:  # a plain form post carries its token in the body
            field = form.get(CSRF_FIELD)
            require_csrf(settings, principal, field if isinstance(field, str) else None)
        typed = _typed(form)
        try:
            package = await packages.store_upload(
                _without_csrf(form), session, principal, store=store
            )
        except DomainError as exc:
            if exc.status_code == 403:
                raise
            return await _upload_refusal(request, session, context, exc, typed)
    finally:
        await form.close()  # and the file the parser spooled to disk
    notice = f"Stored {package.kind} {package.title} {package.version}."
    if is_fragment(request):
        return await _page(session, context, fragment="packages", notice=notice)
    return RedirectResponse("/ota?uploaded=1", status_code=303)


async def _upload_refusal(
    request: Request,
    session: AsyncSession,
    context: dict[str, object],
    exc: DomainError,
    typed: dict[str, str],
) -> HTMLResponse:
    """The packages card (htmx) or the page again, the reason above the upload form."""
    await _reload(session, context)
    return await _page(
        session,
        context,
        fragment="packages" if is_fragment(request) else None,
        status_code=exc.status_code,
        upload_error=exc.message,
        typed=typed,
    )


@router.post("/ota/packages/{package_id}/delete")
async def delete_package(
    request: Request,
    package_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    store: StoreDep,
) -> Response:
    """Managers: delete a package; one an open rollout uses stays, with the reason shown."""
    try:
        package = await packages.get_package(session, principal, package_id)
        label = f"{package.title} {package.version}"
        await packages.delete_package(session, principal, package_id, store)
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        await _reload(session, context)
        rollout_id = exc.details.get("rollout_id")
        return await _page(
            session,
            context,
            fragment="packages" if is_fragment(request) else None,
            status_code=exc.status_code,
            package_error=f"{label} was not deleted: {exc.message}.",
            blocking_rollout=rollout_id,
        )
    if is_fragment(request):
        return await _page(session, context, fragment="packages", notice=f"Deleted {label}.")
    return RedirectResponse("/ota", status_code=303)


# -- signing keys --------------------------------------------------------------------------


@router.post("/ota/keys")
async def add_key(
    request: Request, session: SessionDep, context: Context, principal: PageWriter
) -> Response:
    """Admins: register an Ed25519 public key; a refusal is shown beside the form."""
    principal.require(Role.ADMIN)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
    try:
        data = KeyIn.model_validate(
            {"name": fields.get("name", "").strip(), "public_key": fields.get("public_key", "")}
        )
        await packages.add_key(session, principal, data)
    except DomainError as exc:
        if exc.status_code in (403, 404):
            raise
        await _reload(session, context)
        return await _key_refusal(request, session, context, exc.message, exc.status_code, fields)
    except ValidationError as exc:  # a field empty or too long
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return await _key_refusal(request, session, context, message, 422, fields)
    if is_fragment(request):
        return await _page(session, context, fragment="keys", key_notice="Key registered.")
    return RedirectResponse("/ota#keys", status_code=303)


async def _key_refusal(
    request: Request,
    session: AsyncSession,
    context: dict[str, object],
    message: str,
    status_code: int,
    fields: dict[str, str],
) -> HTMLResponse:
    return await _page(
        session,
        context,
        fragment="keys" if is_fragment(request) else None,
        status_code=status_code,
        key_error=message,
        key_typed=fields,
    )


@router.post("/ota/keys/{ota_key_id}/delete")
async def delete_key(
    request: Request,
    ota_key_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
) -> Response:
    """Admins: remove a signing key."""
    await packages.delete_key(session, principal, ota_key_id)
    if is_fragment(request):
        return await _page(session, context, fragment="keys", key_notice="Key removed.")
    return RedirectResponse("/ota#keys", status_code=303)
