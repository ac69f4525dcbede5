"""The application factory and its lifespan: database, broker, jobs, clean shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib.resources import files
from typing import Protocol

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from fleetcore import __version__, migrate
from fleetcore.accounts.limits import AccountLimiter
from fleetcore.accounts.mail import Mailer
from fleetcore.advisory.recommendations import expire_due, sync_commands
from fleetcore.alerts.events import AlertBus
from fleetcore.analytics import explain
from fleetcore.analytics.engine import AnalyticsEngine, health_reading
from fleetcore.analytics.host import InlineRunner, ProcessRunner
from fleetcore.archive import gate as archive_gate
from fleetcore.archive import service as archive_service
from fleetcore.attributes.desired import DesiredState
from fleetcore.audit.handlers import install_audit_handlers
from fleetcore.auth.api_limits import ApiLimiter
from fleetcore.auth.ratelimit import LoginLimiter
from fleetcore.auth.security import configure_hasher
from fleetcore.broker_sync.dispatcher import BrokerSync
from fleetcore.cluster import shared_state
from fleetcore.commands import service as commands_service
from fleetcore.commands.delivery import EXPIRY_INTERVAL_S, CommandService
from fleetcore.config import Settings
from fleetcore.cors import install_cors
from fleetcore.dashboard.context import install_page_handlers
from fleetcore.db import Database, create_engine, open_database
from fleetcore.deadletters.sink import DeadLetterSink
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.devices.auth_cache import IngestDevice
from fleetcore.external_broker.lane import OrderedLane, lane_lock
from fleetcore.external_broker.transport import ExternalTransport
from fleetcore.housekeeping import job as housekeeping
from fleetcore.job_leases import PostgresLeases
from fleetcore.jobs import JobScheduler
from fleetcore.live.telemetry import telemetry_publisher
from fleetcore.media import housekeeping as media_housekeeping
from fleetcore.media.hook import MediaHook
from fleetcore.media.store import build_store
from fleetcore.middleware import RequestContextMiddleware, api_collections
from fleetcore.mqtt.gateway import MqttGateway
from fleetcore.mqtt.limits import ProvisioningLimits
from fleetcore.mqtt.transport import EmbeddedTransport
from fleetcore.notifications.dispatcher import Dispatcher
from fleetcore.ops.disk import disk_checks
from fleetcore.ops.readiness import database_checks
from fleetcore.ops.router import router as ops_router
from fleetcore.ota import job as ota_job
from fleetcore.ota.downloads import MqttChunks
from fleetcore.ota.store import build_ota_store
from fleetcore.ota.tracker import OtaTracker
from fleetcore.plans.cache import REFRESH_S as PLANS_REFRESH_S
from fleetcore.plans.cache import PlanCache
from fleetcore.plans.quota import IngestQuota
from fleetcore.plates.hook import PlateHook
from fleetcore.ratelimits import Limiter
from fleetcore.roles import runs
from fleetcore.rules.engine import RulesEngine
from fleetcore.security_headers import REDOC_POLICY, SecurityHeadersMiddleware, security_headers
from fleetcore.status.presence import Presence
from fleetcore.telemetry import compaction, partitions, retention
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.telemetry.router import post_telemetry, post_telemetry_tb
from fleetcore.telemetry.writer import TelemetryWriter
from fleetcore.templating import templates
from fleetcore.usage import jobs as usage_jobs
from fleetcore.usage.meter import UsageMeter
from fleetcore.vending.dex_messages import DexReceiver
from fleetcore.web.body_limit import BodyLimitMiddleware
from fleetcore.web.device_lane import DeviceLane
from fleetcore.web.errors import API_ERROR_STATUSES, documented_errors, install_error_handlers

log = structlog.get_logger(__name__)

RULES_REFRESH_S = 5.0  # beside other processes: how soon a rule changed elsewhere applies


# Served by the device lane, ahead of the general middleware stack (fleetcore.web.device_lane).
LANE_ENDPOINTS = (post_telemetry, post_telemetry_tb)


class FleetcoreApp(FastAPI):
    """FastAPI with the device lane in front of its middleware stack (when the app serves the
    ingest routes)."""

    def build_middleware_stack(self) -> ASGIApp:
        """The general stack, behind the device lane."""
        stack = super().build_middleware_stack()
        routes = [
            c.original_route
            for c in iter_route_contexts(self.routes)
            if isinstance(c.original_route, APIRoute) and c.endpoint in LANE_ENDPOINTS
        ]
        if not routes:
            return stack
        settings: Settings = self.state.settings
        return DeviceLane(
            stack,
            routes=routes,
            collections=api_collections(self),
            handlers=self.exception_handlers,
            headers=security_headers(hsts=settings.environment == "production"),
            max_body_bytes=settings.max_body_bytes,
        )


class Component(Protocol):
    """Something the lifespan starts before serving and stops after (e.g. the broker)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """Build the ASGI app; pass `database` to share one (tests bind it to a transaction)."""
    settings.check_signing_key()
    if settings.uses_development_key:
        # Anyone can read this key in the source and mint tokens for any user: say so loudly.
        log.warning(
            "development_secret_key",
            message="signing tokens with the PUBLISHED development key: anyone can sign in as "
            "anyone; set FLEETCORE_SECRET_KEY (and FLEETCORE_ENVIRONMENT=production) before "
            "this server is reachable by others",
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = database or open_database(settings)
        app.state.database = db
        app.state.readiness_checks = database_checks(db) | disk_checks(settings)
        # Which part runs here: fleetcore.roles.RUNS_IN, one table for every role.
        role = settings.role
        here = partial(runs, role=role)
        shared = role != "all"  # other processes share the work (PostgreSQL)
        # PostgreSQL: several processes may run the jobs; each tick is run by one of them.
        # No job ticks where background writers are not allowed (a test's shared connection).
        app.state.jobs = JobScheduler(
            guard=PostgresLeases(db.engine.url) if db.dialect == "postgresql" else None,
            background_writes=db.background_writes_allowed,
        )
        # PostgreSQL: the writer gets a connection of its own, so request sessions (device
        # token look-ups) can never hold every pooled connection while it waits for one.
        writer_engine = (
            create_engine(db.engine.url, pool_size=1)
            if db.dialect == "postgresql" and here("telemetry-pipeline")
            else None
        )
        pipeline = IngestPipeline(
            TelemetryWriter(writer_engine or db.engine),
            max_pending=settings.ingest_max_pending,
            batch_size=settings.ingest_batch_size,
            flush_interval_s=settings.ingest_flush_ms / 1000,
        )
        app.state.pipeline = pipeline
        # Usage metering: counted in memory where it happens, flushed every few seconds.
        meter: UsageMeter = app.state.usage_meter
        meter.database = db
        pipeline.on_stored = meter.stored
        usage_jobs.register_jobs(app.state.jobs, db, meter, settings)
        # What several processes share: Redis-backed with FLEETCORE_REDIS_URL, else in-process.
        cluster = shared_state(settings)
        app.state.readiness_checks.update(cluster.checks)
        app.state.live = live = cluster.hub
        if here("handler.live"):
            pipeline.add_handler(telemetry_publisher(live))
        dead_letters = DeadLetterSink(
            db, rate_per_s=settings.dead_letters_rate_per_s, burst=settings.dead_letters_burst
        )
        app.state.dead_letters = dead_letters
        housekeeping.register_job(app.state.jobs, db, settings)
        # Media bytes: the filesystem under the data directory, or S3 (FLEETCORE_MEDIA_STORE).
        app.state.media_store = media_store = build_store(settings)
        media_housekeeping.register_job(app.state.jobs, db, media_store, settings)
        # OTA packages: a store of their own (never under the media store's orphan sweep).
        app.state.ota_store = ota_store = build_ota_store(settings)
        ota_job.register_job(app.state.jobs, db, live, settings.ota_job_interval_s)
        # Stopped in reverse: the sink outlives everything that records into it.
        presence = Presence(db, live, shared=shared, share=cluster.presence)
        app.state.presence = presence
        if shared:  # last-seen times here, the offline check once per tick in a worker
            app.state.jobs.register(
                "presence.seen", settings.presence_sweep_s, presence.flush_seen, per_process=True
            )
            app.state.jobs.register(
                "presence.sweep", settings.presence_sweep_s, presence.check_offline
            )
        else:
            app.state.jobs.register("presence.sweep", settings.presence_sweep_s, presence.sweep)
        commands = CommandService(
            db,
            live,
            presence=lambda: getattr(app.state, "presence", None),
            shared=shared,
            locks=cluster.locks,
        )
        app.state.commands = commands
        commands.on_sent = meter.commands_sent
        app.state.jobs.register("commands.expire", EXPIRY_INTERVAL_S, commands.expire_due)
        app.state.desired = desired = DesiredState(db, live)
        app.state.alert_bus = bus = AlertBus(live)
        # Deliveries are staged with the alert change; the dispatcher is woken after commit.
        app.state.notifications = notifications = Dispatcher(db, settings)
        bus.listeners.append(notifications.wake)
        notifications.on_delivered = meter.notification_delivered
        # A worker's engine evaluates no batch: its sweep judges on saved states.
        app.state.rules = rules = RulesEngine(db, bus, sweep_from_storage=not here("handler.rules"))
        if here("handler.rules"):
            pipeline.add_handler(rules.on_committed)
        app.state.jobs.register("rules.no-data", settings.rules_sweep_s, rules.sweep)
        if shared:  # a rule changed through another process
            app.state.jobs.register(
                "rules.refresh", RULES_REFRESH_S, rules.check_rules, per_process=True
            )
        # Advisory analytics after the rules: its health readings go back through the
        # pipeline as the key analytics.health, where rules may alert on them.
        app.state.analytics = analytics = None
        if settings.analytics_enabled and here("analytics-engine"):
            analytics = AnalyticsEngine(
                db,
                live,
                flush_interval_s=settings.analytics_flush_s,
                explainer=explain.load(settings.analytics_explainer),
                health_sink=health_reading(pipeline),
                runner=ProcessRunner() if settings.analytics_process else InlineRunner(),
            )
            app.state.analytics = analytics
            if here("handler.analytics"):
                pipeline.add_handler(analytics.on_committed)
            app.state.jobs.register(
                "analytics.health", 600, analytics.refresh_health, per_process=True
            )
        # Recommendations nobody decided expire; approved ones follow their command's end.
        app.state.jobs.register(
            "recommendations.expire", settings.recommendations_sweep_s, partial(expire_due, db)
        )
        app.state.jobs.register(
            "recommendations.sync", settings.recommendations_sweep_s, partial(sync_commands, db)
        )
        # The engine stops after the pipeline (reversed order): it evaluates the last batch.
        # Stopped after the engine: alert changes staged at its last batch are sent if they can.
        components: list[Component] = [
            dead_letters,
            notifications,
            rules,
            *([analytics] if analytics is not None else []),
            pipeline,
            presence,
            desired,
            commands,
            OtaTracker(db, live),
        ]
        if cluster.component is not None:
            components.insert(0, cluster.component)  # up first, down last
        components.insert(0, meter)  # stops last: flushes what the others counted
        # Device messages from every transport (MQTT, HTTP) go through one layer.
        messages = DeviceMessages(db, pipeline, dead_letters)
        messages.listeners.append(presence)
        messages.on_traffic = partial(_traffic, presence, meter)
        messages.on_message = meter.device_message
        messages.listeners.append(commands)
        messages.command_results = commands.mqtt_result
        messages.http_results = partial(commands_service.device_result, commands)
        messages.dex_uploads = DexReceiver(db, pipeline).receive
        messages.ota_chunks = MqttChunks(db, ota_store)
        # First of the event hooks: attachments resolve before other modules read the events.
        messages.event_hooks.insert(0, MediaHook())
        # Plate reads after the media hook (it resolves attachments to media ids first).
        messages.event_hooks.append(
            PlateHook(
                bus,
                visit_window_s=settings.plates_visit_window_s,
                public_url=settings.public_url or "",
            )
        )
        # The organizations' plans: read before serving, then every PLANS_REFRESH_S.
        plan_cache: PlanCache = app.state.plan_cache
        quota_limiter = Limiter(settings.redis_url, name="plans")
        messages.quota = IngestQuota(
            plan_cache,
            limiter=quota_limiter,
            # The usage meter (fleetcore.usage) when the app has one: readings per day.
            meter=getattr(app.state, "usage_meter", None),
            database=db,
        )
        # A plan changed through another process (several processes on one PostgreSQL,
        # whatever their role): a counter read every PLANS_REFRESH_S.
        app.state.jobs.register(
            "plans.refresh", PLANS_REFRESH_S, partial(plan_cache.refresh, db), per_process=True
        )
        app.state.device_messages = messages
        app.state.gateway = app.state.transport = app.state.ordered_lane = None
        # Mosquitto dynamic security: device credentials reach the broker through an outbox.
        app.state.broker_sync = None
        if settings.mqtt_dynsec:
            app.state.broker_sync = BrokerSync(db, settings)
            components.insert(0, app.state.broker_sync)  # stops last: staged rows still applied
        if settings.external_broker and here("mqtt-external"):
            # Devices talk to an external broker: this process consumes (ingest) or only
            # publishes commands and configuration (api).
            consume = here("mqtt.consume")
            external = ExternalTransport(settings, messages, consume=consume, ordered_lane=consume)
            messages.on_status = presence.reported
            commands.outbox = external
            components.append(external)
            app.state.readiness_checks["mqtt"] = external.ready
            app.state.transport = external
            if consume:  # after the transport: stops first, while the layer is attached
                lane = OrderedLane(external, lane_lock(db, settings.mqtt_share_group))
                components.append(lane)
                app.state.readiness_checks["mqtt-lane"] = lane.ready
                app.state.ordered_lane = lane
        elif not settings.external_broker and settings.mqtt_port and here("mqtt-broker"):
            gateway = MqttGateway(
                db, messages, provisioning=ProvisioningLimits.from_settings(settings)
            )
            # Last to start, first to stop: what it acknowledged is already in the pipeline.
            transport = EmbeddedTransport(settings, gateway)
            commands.outbox = transport
            components.append(transport)
            app.state.readiness_checks["mqtt"] = transport.ready
            app.state.gateway, app.state.transport = gateway, transport
        started: list[Component] = []
        try:
            if settings.migrate_on_start:
                await migrate.upgrade(db)
                log.info("migrations_applied", revisions=sorted(migrate.head_revisions()))
            if db.dialect == "postgresql":
                await partitions.ensure_partitions(
                    db.engine, days_ahead=settings.partitions_ahead_days
                )
            retention.register_jobs(
                app.state.jobs, db, settings, archived=archive_gate.archived_days(db)
            )
            compaction.register_jobs(app.state.jobs, db, settings)
            await plan_cache.load_at_start(db)
            archive_service.register_job(app.state.jobs, db, settings)
            # Built everywhere (routes read some of them); started where the table says.
            components = [c for c in components if here(c.name)]
            app.state.components = [c.name for c in components]
            for name in app.state.jobs.names:
                if not here(name):
                    app.state.jobs.unregister(name)
            for component in components:
                await component.start()
                started.append(component)
            await app.state.jobs.start()
            log.info(
                "started",
                version=__version__,
                role=role,
                database=db.dialect,
                jobs=app.state.jobs.names,
                components=[c.name for c in components],
            )
            yield
        finally:
            await app.state.jobs.stop()
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    # One that cannot finish (its database is down) must not keep the
                    # others from stopping: the pipeline still writes what it accepted.
                    log.exception("component_stop_failed", component=component.name)
            if writer_engine is not None:
                await writer_engine.dispose()
            await messages.quota.drain()
            await quota_limiter.aclose()
            await app.state.login_limiter.aclose()
            if app.state.api_limiter is not None:
                await app.state.api_limiter.aclose()
            await app.state.account_mailer.aclose()
            await app.state.account_limiter.aclose()
            if database is None:
                await db.close()
            log.info("stopped")

    app = FleetcoreApp(
        # FastAPI's own OpenTelemetry instrumentation: off (metrics are Prometheus, in
        # RequestContextMiddleware); its per-request checks cost the hot path a few percent.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Fleetcore",
        version=__version__,
        description="Fleets of devices: registry, telemetry, live data, alerts, commands.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.usage_meter = UsageMeter()  # its database is set by the lifespan
    app.state.login_limiter = LoginLimiter.from_settings(settings)
    # Plans' limits by organization (empty: every organization unlimited, the default).
    app.state.plan_cache = plan_cache = PlanCache()
    # A plan may set an organization's API requests per minute: the limiter always exists.
    app.state.api_limiter = ApiLimiter.from_settings(settings, plan_rate=plan_cache.api_rate)
    app.state.account_limiter = AccountLimiter.from_settings(settings)
    app.state.account_mailer = Mailer(settings)
    configure_hasher(
        time_cost=settings.password_hash_time_cost, memory_kib=settings.password_hash_memory_kib
    )
    # Outermost last: the request id and access log see the body limit's 413s too.
    app.add_middleware(BodyLimitMiddleware, default_limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.environment == "production")
    app.add_middleware(RequestContextMiddleware)
    install_cors(app, settings)  # outermost: a preflight needs nothing of the others
    install_error_handlers(app)
    install_audit_handlers(app)
    install_page_handlers(app)
    app.mount("/static", StaticFiles(directory=str(files("fleetcore") / "static")), name="static")
    app.include_router(ops_router)
    if not runs("routes.api", settings.role):
        return app  # ingest and worker processes serve /health, /ready and /metrics only
    # Imported here: an ingest or worker process does not build the routes it never serves
    # (importing them is about a second of CPU at every start).
    from fleetcore.routers import API_ROUTERS, PAGE_ROUTERS

    for router in API_ROUTERS:
        app.include_router(router, responses=documented_errors(*API_ERROR_STATUSES))
    for router in PAGE_ROUTERS:
        app.include_router(router)

    @app.get("/api/docs", include_in_schema=False)
    async def api_docs(request: Request) -> HTMLResponse:
        # Our own page, not FastAPI's: that one starts Swagger UI with an inline script.
        return templates.TemplateResponse(request, "ops/api_docs.html")

    @app.get("/api/redoc", include_in_schema=False)
    async def api_redoc(request: Request) -> HTMLResponse:
        # ReDoc styles its components at run time (styled-components) and searches in a
        # worker made from a blob: this page's own policy allows both; scripts stay 'self'.
        return templates.TemplateResponse(
            request, "ops/api_redoc.html", headers={"Content-Security-Policy": REDOC_POLICY}
        )

    return app


def _traffic(presence: Presence, meter: UsageMeter, device: IngestDevice) -> None:
    """A device sent something: presence (online, last seen) and usage (active today)."""
    presence.seen(device)
    meter.device_seen(device.organization_id, device.id)
