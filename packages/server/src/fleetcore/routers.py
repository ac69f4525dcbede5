"""Every domain's routers, in the order they appear in the API docs."""

from __future__ import annotations

from fastapi import APIRouter

from fleetcore.assets.router import router as assets_router
from fleetcore.attributes.router import router as attributes_router
from fleetcore.audit.router import router as audit_router
from fleetcore.auth.router import router as auth_router
from fleetcore.devices.router import router as devices_router

API_ROUTERS: tuple[APIRouter, ...] = (
    auth_router,
    devices_router,
    assets_router,
    attributes_router,
    audit_router,
)


def _page_routers() -> tuple[APIRouter, ...]:
    from fleetcore.auth.pages import router as auth_pages
    from fleetcore.dashboard.pages import router as dashboard_pages

    return (auth_pages, dashboard_pages)


PAGE_ROUTERS: tuple[APIRouter, ...] = _page_routers()
