"""The device page's command form: an operator sends a command and gets its row back for the
page's commands table (htmx). Same service and schema as the API, so the same rules apply."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from fleetcore.commands import service
from fleetcore.commands.schemas import MAX_TIMEOUT_S, CommandIn
from fleetcore.dashboard.web import Context, PageWriter, render
from fleetcore.deps import SessionDep
from fleetcore.errors import Invalid

router = APIRouter(include_in_schema=False)


@router.post("/devices/{device_id}/commands")
async def send_command(
    request: Request,
    device_id: uuid.UUID,
    session: SessionDep,
    context: Context,
    principal: PageWriter,
    method: Annotated[str, Form(max_length=64)] = "",
    params: Annotated[str, Form(max_length=20_000)] = "",
    timeout_s: Annotated[int, Form(ge=1, le=MAX_TIMEOUT_S)] = 30,
    persistent: Annotated[str | None, Form(max_length=8)] = None,
) -> HTMLResponse:
    """Operators: send a command from the form; answers its row for the commands table."""
    data = _command_in(method, params, timeout_s, persistent=bool(persistent))
    command = await service.create_command(
        session, principal, request.app.state.commands, device_id, data=data
    )
    return render(context, "devices/_command_row.html", command=command, status_code=201)


def _command_in(method: str, params: str, timeout_s: int, *, persistent: bool) -> CommandIn:
    """The form's fields as the API's body; bad JSON or values are 422 naming the field."""
    try:
        parsed: Any = orjson.loads(params) if params.strip() else {}
    except orjson.JSONDecodeError:
        raise Invalid(
            "params must be a JSON object", code="INVALID_PARAMS", details={"field": "params"}
        ) from None
    try:
        return CommandIn(method=method, params=parsed, timeout_s=timeout_s, persistent=persistent)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "params"
        raise Invalid(
            f"{field}: {first['msg']}", code="VALIDATION_ERROR", details={"field": field}
        ) from None
