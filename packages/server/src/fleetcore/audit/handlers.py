"""Permission denials are answered 403 and written to the audit log in their own transaction."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import Response

from fleetcore.audit import service as audit
from fleetcore.auth.principal import PermissionDenied, Principal
from fleetcore.db import Database
from fleetcore.web.errors import error_answer

log = structlog.get_logger(__name__)


async def _permission_denied(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PermissionDenied)
    principal: Principal | None = getattr(request.state, "principal", None)
    database: Database = request.app.state.database
    try:
        async with database.session() as session:
            audit.record(
                session,
                action="permission.denied",
                actor=principal,
                outcome="denied",
                organization_id=principal.organization_id if principal else None,
                details={
                    "method": request.method,
                    "path": request.url.path,
                    "required_role": exc.required,
                },
            )
            await session.commit()
    except Exception:  # the answer matters more than the record
        log.exception("audit_write_failed", action="permission.denied")
    return error_answer(request, exc.status_code, exc.code, exc.message, exc.details)


def install_audit_handlers(app: FastAPI) -> None:
    """Register the PermissionDenied handler (more specific than DomainError's)."""
    app.add_exception_handler(PermissionDenied, _permission_denied)
