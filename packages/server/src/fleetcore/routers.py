"""Every domain's routers, in the order they appear in the API docs."""

from __future__ import annotations

from fastapi import APIRouter

from fleetcore.audit.router import router as audit_router
from fleetcore.auth.router import router as auth_router

API_ROUTERS: tuple[APIRouter, ...] = (auth_router, audit_router)
