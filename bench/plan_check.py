"""What a plan costs the single-reading HTTP ingest path, without a plan and with one.

Two figures. In process: the plan checks the HTTP ingest path makes per request (messages
per second, then readings per day), timed on their own with the real plan cache loaded from
a migrated SQLite database. End to end: `fleetcore serve` (SQLite) under the telemetry_http
single-reading load (100 keep-alive device clients), its organization without a plan and on
a plan whose limits are never reached (so every check runs and none refuses), alternating.
The served process has no usage meter on this branch, so end to end the plan costs the
messages-per-second window; the in-process figure includes the readings check too.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from tests.support.postgres import free_port

from bench import telemetry_http
from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.schemas import OrganizationIn
from fleetcore.db import Database
from fleetcore.plans.cache import PlanCache
from fleetcore.plans.models import OrganizationPlan, Plan
from fleetcore.plans.quota import IngestQuota
from fleetcore.ratelimits import Limiter

CALLS = 200_000
WINDOW_CALLS = 2_000
REPEATS = 5
ROUNDS = 2  # end to end: no plan, plan, no plan, plan
NEVER = 1_000_000_000  # limits no bench reaches: every check runs, none refuses


class _Meter:
    """Today's readings as the usage meter answers them: a dict look-up."""

    def __init__(self) -> None:
        self.totals: dict[tuple[uuid.UUID, str], int] = defaultdict(int)

    def today(self, organization_id: uuid.UUID, kind: Any) -> int:
        return self.totals[(organization_id, str(kind))]


async def _ask(quota: IngestQuota, org: uuid.UUID) -> None:
    """What device_messages.http asks per single-reading request."""
    if quota.rated(org):
        await quota.take_message(org)
    quota.check_readings(org, 1)


async def _per_call_ns(quota: IngestQuota, org: uuid.UUID, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        await _ask(quota, org)
    return (time.perf_counter_ns() - started) / calls


async def _empty_ns() -> float:
    async def nothing() -> None:
        return None

    started = time.perf_counter_ns()
    for _ in range(CALLS):
        await nothing()
    return (time.perf_counter_ns() - started) / CALLS


async def in_process(tmp: Path) -> dict[str, Any]:
    """Per-request cost of the plan checks: no plan, and a plan setting both rates."""
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp / 'plans.db'}")
    try:
        await migrate.upgrade(database)
        async with database.session(write=True) as session:
            free = await users.create_organization(
                session, None, data=OrganizationIn(name="Free", slug="free")
            )
            paying = await users.create_organization(
                session, None, data=OrganizationIn(name="Paying", slug="paying")
            )
            readings = await users.create_organization(
                session, None, data=OrganizationIn(name="Readings", slug="readings")
            )
            plan = Plan(name="big", max_readings_per_day=NEVER, max_messages_per_second=NEVER)
            daily = Plan(name="daily", max_readings_per_day=NEVER)
            session.add_all([plan, daily])
            await session.flush()
            session.add(OrganizationPlan(organization_id=paying.id, plan_id=plan.id))
            session.add(OrganizationPlan(organization_id=readings.id, plan_id=daily.id))
            await session.commit()
        cache = PlanCache()
        await cache.reload(database)
        baseline = await _empty_ns()
        limiter = Limiter(name="bench-plans")
        quota = IngestQuota(cache, limiter=limiter, meter=_Meter(), database=database)
        no_plan = await _per_call_ns(quota, free.id, CALLS)
        readings_only = await _per_call_ns(quota, readings.id, CALLS)
        # The messages-per-second window holds a second of messages: time WINDOW_CALLS at a
        # time (about a second's worth at the end-to-end rate) on an empty window each.
        rated = []
        for _ in range(REPEATS):
            fresh = Limiter(name="bench-plans")
            quota.limiter = fresh
            rated.append(await _per_call_ns(quota, paying.id, WINDOW_CALLS))
            await fresh.aclose()
        await quota.drain()
        await limiter.aclose()
    finally:
        await database.close()
    return {
        "empty_coroutine_ns": round(baseline),
        "no_plan_ns": round(no_plan),
        "plan_readings_per_day_ns": round(readings_only),
        "plan_readings_and_messages_per_second_ns": round(statistics.median(rated)),
    }


async def _assign(port: int, plan: bool) -> None:
    """As the superuser: the Bench organization on a never-reached plan, or on none."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        login = await http.post(
            "/api/v1/auth/login",
            json={"email": telemetry_http.ROOT, "password": telemetry_http.PASSWORD},
        )
        login.raise_for_status()
        root = {"Authorization": f"Bearer {login.json()['access_token']}"}
        orgs = await http.get("/api/v1/organizations", headers=root)
        orgs.raise_for_status()
        org_id = next(o["id"] for o in orgs.json() if o["slug"] == "bench")
        plan_id = None
        if plan:
            created = await http.post(
                "/api/v1/plans",
                headers=root,
                json={
                    "name": f"bench-{uuid.uuid4().hex[:6]}",
                    "max_readings_per_day": NEVER,
                    "max_messages_per_second": 1_000_000,
                    "max_devices": 10_000,
                },
            )
            created.raise_for_status()
            plan_id = created.json()["id"]
        assigned = await http.put(
            f"/api/v1/organizations/{org_id}/plan", headers=root, json={"plan_id": plan_id}
        )
        assigned.raise_for_status()


async def _round(port: int, tokens: list[str], base: int, plan: bool) -> dict[str, float]:
    await _assign(port, plan)
    result, _ = await telemetry_http._shape(port, tokens, base, 1, telemetry_http._SINGLE)
    return telemetry_http._figures(result, 1)


async def _served(port: int) -> dict[str, list[dict[str, float]]]:
    tokens = await telemetry_http.provision(port)
    base = int(time.time() * 1000) - 4 * 3_600_000
    runs: dict[str, list[dict[str, float]]] = {"no_plan": [], "plan": []}
    for n in range(ROUNDS * 2):
        plan = n % 2 == 1
        figures = await _round(port, tokens, base + n * 2_000_000, plan)
        runs["plan" if plan else "no_plan"].append(figures)
    return runs


def end_to_end(tmp: Path) -> dict[str, Any]:
    """Single readings over HTTP, no plan and a plan, alternating on one server."""
    data_dir = tmp / "serve"
    env = telemetry_http._env(FLEETCORE_DATA_DIR=str(data_dir))
    telemetry_http._cli(
        env,
        "admin",
        "create-superuser",
        "--email",
        telemetry_http.ROOT,
        "--password",
        telemetry_http.PASSWORD,
    )
    port = free_port()
    with telemetry_http.serving(env, port, tmp / "serve.log"):
        runs = asyncio.run(_served(port))
    rate = {k: statistics.median(r["requests_per_s"] for r in v) for k, v in runs.items()}
    p50 = {k: round(statistics.median(r["p50_ms"] for r in v), 2) for k, v in runs.items()}
    return {
        "runs": runs,
        "median_requests_per_s": rate,
        "median_p50_ms": p50,
        "plan_vs_no_plan": round(rate["plan"] / rate["no_plan"], 3),
    }


def run() -> dict[str, Any]:
    """Both figures."""
    with tempfile.TemporaryDirectory() as tmp:
        process = asyncio.run(in_process(Path(tmp)))
        served = end_to_end(Path(tmp))
    return {
        "name": "plan_check",
        "in_process": process,
        "single_reading_http": served,
        "note": (
            "in process: per request, the plan checks alone (the Limiter in memory, a dict "
            "meter); end to end: fleetcore serve on SQLite, 100 keep-alive clients on the same "
            "2 shared cores, 1 s warm-up + 5 s per run, plan runs alternating with no-plan runs"
        ),
    }
