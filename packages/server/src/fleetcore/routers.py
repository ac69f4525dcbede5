"""Every domain's routers, in the order they appear in the API docs."""

from __future__ import annotations

from fastapi import APIRouter

from fleetcore.accounts.pages import router as account_pages
from fleetcore.accounts.router import router as accounts_router
from fleetcore.advisory.analytics_router import router as analytics_router
from fleetcore.advisory.pages import router as advisory_pages
from fleetcore.advisory.recommendations_router import router as recommendations_router
from fleetcore.alerts.pages import router as alerts_pages
from fleetcore.alerts.router import router as alerts_router
from fleetcore.archive.router import router as archives_router
from fleetcore.assets.pages import router as assets_pages
from fleetcore.assets.router import router as assets_router
from fleetcore.attributes.router import router as attributes_router
from fleetcore.audit.pages import router as audit_pages
from fleetcore.audit.router import router as audit_router
from fleetcore.auth.admin_pages import router as admin_pages
from fleetcore.auth.pages import router as auth_pages
from fleetcore.auth.router import router as auth_router
from fleetcore.broker_auth.router import router as broker_auth_router
from fleetcore.commands.pages import router as commands_pages
from fleetcore.commands.router import router as commands_router
from fleetcore.dashboard.pages import router as dashboard_pages
from fleetcore.deadletters.pages import router as dead_letters_pages
from fleetcore.deadletters.router import router as dead_letters_router
from fleetcore.devices.pages import router as devices_pages
from fleetcore.devices.router import router as devices_router
from fleetcore.events.router import router as events_router
from fleetcore.housekeeping.router import router as housekeeping_router
from fleetcore.live.router import router as live_router
from fleetcore.media.router import router as media_router
from fleetcore.notifications.router import router as notifications_router
from fleetcore.ota.pages import router as ota_pages
from fleetcore.ota.rollout_pages import router as ota_rollout_pages
from fleetcore.ota.router import router as ota_router
from fleetcore.ota.router import thingsboard_router as ota_thingsboard_router
from fleetcore.plans.pages import router as plans_pages
from fleetcore.plans.router import router as plans_router
from fleetcore.plates.pages import router as plates_pages
from fleetcore.plates.router import router as plates_router
from fleetcore.rules.pages import router as rules_pages
from fleetcore.rules.router import router as rules_router
from fleetcore.status.router import router as status_router
from fleetcore.telemetry.query_router import router as telemetry_query_router
from fleetcore.telemetry.retention_router import router as retention_router
from fleetcore.telemetry.router import router as telemetry_router
from fleetcore.telemetry.router import thingsboard_router as telemetry_thingsboard_router
from fleetcore.usage.pages import router as usage_pages
from fleetcore.usage.router import router as usage_router
from fleetcore.vending.audit_router import router as vending_audit_router
from fleetcore.vending.catalog_router import router as vending_catalog_router
from fleetcore.vending.pages import router as vending_pages
from fleetcore.vending.service_router import router as vending_service_router

API_ROUTERS: tuple[APIRouter, ...] = (
    # First: routes are matched in order, and device ingest is the busiest path.
    telemetry_router,
    live_router,
    auth_router,
    accounts_router,
    devices_router,
    assets_router,
    attributes_router,
    events_router,
    media_router,
    ota_router,
    commands_router,
    rules_router,
    alerts_router,
    plates_router,
    recommendations_router,
    analytics_router,
    notifications_router,
    status_router,
    audit_router,
    dead_letters_router,
    retention_router,
    housekeeping_router,
    plans_router,
    archives_router,
    usage_router,
    telemetry_query_router,
    vending_catalog_router,
    vending_service_router,  # vending: routes and service orders
    vending_audit_router,
    broker_auth_router,  # machine-to-machine: an external broker's auth checks
    ota_thingsboard_router,  # /api/v1/{token}/firmware and /software
    # Last: its ThingsBoard route /api/v1/{token}/telemetry must not shadow the others.
    telemetry_thingsboard_router,
)
PAGE_ROUTERS: tuple[APIRouter, ...] = (
    plans_pages,
    auth_pages,
    account_pages,
    dashboard_pages,
    devices_pages,
    commands_pages,  # the device page's command form
    alerts_pages,
    plates_pages,
    rules_pages,
    advisory_pages,
    assets_pages,
    dead_letters_pages,
    admin_pages,
    audit_pages,
    usage_pages,
    vending_pages,
    ota_pages,
    ota_rollout_pages,
)
