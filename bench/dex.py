"""DEX audits: the parser's throughput, HTTP ingest end to end, a service order for a route.

1. The parser over the real corpus (tests/data/dex) and over a writer-made audit of 1,000
   selections: MB/s and audits/s, in this process.
2. `fleetcore serve` on SQLite, then on PostgreSQL (made as telemetry_http makes them):
   MACHINES devices each post their own sequence of 60-selection audits (counters rising,
   a read every 10 minutes) to /api/v1/devices/me/dex over a keep-alive connection; every
   answer comes after the audit is stored, accounted and its telemetry committed. Audits/s
   and p50/p95 latency, the first (baseline) audits of each machine excluded as warm-up;
   every answered audit must be in the database.
3. On the same servers: a route of 20 machines with 40-slot planograms, each machine with
   two audits (stock known); the time to create its service order (median of a few).
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from tests.support.postgres import PostgresServer, free_port

from bench.load import LoadResult, post_head, post_request, run_requests
from bench.telemetry_http import PASSWORD, ROOT, _cli, _env, organization_admin, serving
from bench.telemetry_ingest import asyncpg_dsn
from fleetcore_protocol.dex import parse
from fleetcore_protocol.dex.model import Counter
from fleetcore_protocol.dex.writer import MachineAudit, Selection, write

CORPUS = Path(__file__).parent.parent / "tests" / "data" / "dex"
PARSE_SECONDS = 1.5
LARGE_SELECTIONS = 1_000
MACHINES = 8
SELECTIONS = 60
WARM_UP_S = 1.0
SECONDS = 6.0
ROUTE_MACHINES = 20
ROUTE_SLOTS = 40
ORDERS = 5
DEX_PATH = "/api/v1/devices/me/dex"
VENDING = "/api/v1/vending"
READ_EVERY = timedelta(minutes=10)


# -- files ---------------------------------------------------------------------------------


def machine_audit(serial: str, n: int, *, start: datetime, selections: int) -> MachineAudit:
    """The n-th read of a machine: counters since initialisation, a few vends a slot since
    the previous read, paid part cash and part cashless, some test and free vends."""
    slots = []
    for i in range(selections):
        price = Decimal("1.20") + Decimal(i % 6) / 10
        paid = n * (1 + i % 4)
        cash = paid // 3
        slots.append(
            Selection(
                f"{10 + i}",
                price,
                paid=Counter(value_init=price * paid, count_init=paid),
                name=f"product {i}",
                capacity=12,
                par_level=10,
                test=Counter(count_init=n // 10),
                free=Counter(count_init=n // 20),
                cash=Counter(value_init=price * cash, count_init=cash),
                cashless=Counter(value_init=price * (paid - cash), count_init=paid - cash),
            )
        )
    return MachineAudit(
        serial=serial,
        model="BENCH-60",
        selections=slots,
        read_at=(start + READ_EVERY * n).replace(tzinfo=None),
        reads=n,
    )


def _parse_rate(files: list[bytes]) -> dict[str, Any]:
    """Parse the files over and over for PARSE_SECONDS."""
    size = sum(len(f) for f in files)
    audits = sum(len(parse(f).audits) for f in files)
    passes = 0
    begin = time.perf_counter()
    while (elapsed := time.perf_counter() - begin) < PARSE_SECONDS:
        for raw in files:
            parse(raw)
        passes += 1
    return {
        "files": len(files),
        "bytes": size,
        "audits": audits,
        "mb_per_s": round(size * passes / elapsed / 1e6, 2),
        "audits_per_s": round(audits * passes / elapsed),
    }


def parser_figures() -> dict[str, Any]:
    """The parser on the real corpus and on one large audit."""
    corpus = [p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.suffix != ".md"]
    start = datetime.now(UTC) - timedelta(days=1)
    large = write(machine_audit("LARGE", 100, start=start, selections=LARGE_SELECTIONS))
    return {
        "corpus": _parse_rate(corpus),
        f"writer_{LARGE_SELECTIONS}_selections": _parse_rate([large]),
    }


# -- HTTP ingest ---------------------------------------------------------------------------


class Sequences:
    """Each connection posts as its machine, the next read of that machine each time."""

    def __init__(self, tokens: list[str], start: datetime) -> None:
        self.heads = [post_head("127.0.0.1", DEX_PATH, {"X-Device-Token": t}) for t in tokens]
        self.start = start
        self.sent = [0] * len(tokens)

    def make(self, connection: int, _n: int) -> bytes:
        """The request of the machine's next read (made before the request is timed)."""
        self.sent[connection] += 1
        audit = machine_audit(
            f"BENCH-{connection}",
            self.sent[connection],
            start=self.start,
            selections=SELECTIONS,
        )
        return post_request(self.heads[connection], write(audit))


async def new_devices(
    http: httpx.AsyncClient, admin: dict[str, str], prefix: str, count: int
) -> list[tuple[str, str]]:
    """Devices made through the API; (id, token) each."""
    out = []
    for i in range(count):
        made = await http.post(
            "/api/v1/devices",
            headers=admin,
            json={"name": f"{prefix}{i}", "serial_number": f"{prefix}-{i}"},
        )
        made.raise_for_status()
        out.append((made.json()["id"], made.json()["access_token"]))
    return out


def _latency(result: LoadResult) -> dict[str, Any]:
    return {
        "audits_per_s": round(result.rate, 1),
        "selections_per_s": round(result.rate * SELECTIONS),
        "p50_ms": round(result.p50_ms, 1),
        "p95_ms": round(result.p95_ms, 1),
        "non_2xx": sum(result.errors.values()),
    }


async def ingest(port: int, http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """Warm up (each machine's baseline), then measure; returns figures and answered count."""
    devices = await new_devices(http, admin, "dex", MACHINES)
    sequences = Sequences([t for _, t in devices], datetime.now(UTC) - timedelta(days=60))
    warm = await run_requests(
        "127.0.0.1", port, sequences.make, connections=MACHINES, seconds=WARM_UP_S
    )
    result = await run_requests(
        "127.0.0.1", port, sequences.make, connections=MACHINES, seconds=SECONDS
    )
    return {
        **_latency(result),
        "machines": MACHINES,
        "selections": SELECTIONS,
        "answered": warm.requests + result.requests,
        "errors": {**warm.errors, **result.errors},
    }


# -- a service order -----------------------------------------------------------------------


async def _route_of_machines(http: httpx.AsyncClient, admin: dict[str, str]) -> str:
    """A route of ROUTE_MACHINES machines, ROUTE_SLOTS slots each, two audits each."""
    products = []
    for i in range(ROUTE_SLOTS):
        made = await http.post(
            f"{VENDING}/products",
            headers=admin,
            json={"name": f"item {i}", "category": "snacks", "default_price": "1.50"},
        )
        made.raise_for_status()
        products.append(made.json()["id"])
    devices = await new_devices(http, admin, "route", ROUTE_MACHINES)
    start = datetime.now(UTC) - timedelta(days=2)
    for index, (device_id, token) in enumerate(devices):
        machine = await http.post(
            f"{VENDING}/machines", headers=admin, json={"device_id": device_id}
        )
        machine.raise_for_status()
        cabinet_id = machine.json()["cabinets"][0]["id"]
        slots = [
            {"slot": f"{10 + i}", "product_id": products[i], "capacity": 12, "par_level": 10}
            for i in range(ROUTE_SLOTS)
        ]
        planogram = await http.put(
            f"{VENDING}/cabinets/{cabinet_id}/planogram", headers=admin, json={"slots": slots}
        )
        planogram.raise_for_status()
        for n in (1, 2 + index % 3):  # sales since the baseline: stock to pick
            raw = write(machine_audit(f"R-{index}", n, start=start, selections=ROUTE_SLOTS))
            sent = await http.post(DEX_PATH, headers={"X-Device-Token": token}, content=raw)
            sent.raise_for_status()
    route = await http.post(f"{VENDING}/routes", headers=admin, json={"name": "bench route"})
    route.raise_for_status()
    route_id: str = route.json()["id"]
    placed = await http.put(
        f"{VENDING}/routes/{route_id}/machines",
        headers=admin,
        json={"device_ids": [d for d, _ in devices]},
    )
    placed.raise_for_status()
    return route_id


async def service_order(http: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    """The median time of POST .../service-orders for the route (ORDERS drafts)."""
    route_id = await _route_of_machines(http, admin)
    times, lines = [], 0
    for day in range(ORDERS):
        begin = time.perf_counter()
        made = await http.post(
            f"{VENDING}/routes/{route_id}/service-orders",
            headers=admin,
            json={"service_date": (date.today() + timedelta(days=day)).isoformat()},
        )
        times.append(time.perf_counter() - begin)
        made.raise_for_status()
        stops = made.json()["stops"]
        lines = sum(len(c["lines"]) for stop in stops for c in stop["cabinets"])
    return {
        "machines": ROUTE_MACHINES,
        "slots_per_machine": ROUTE_SLOTS,
        "pick_lines": lines,
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
    }


# -- the run -------------------------------------------------------------------------------


async def _against(port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        admin = await organization_admin(http)
        figures = {"ingest": await ingest(port, http, admin)}
        figures["service_order"] = await service_order(http, admin)
        return figures


async def _pg_audits(url: str) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM vending_audits"))
    finally:
        await connection.close()


def _sqlite_audits(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM vending_audits").fetchone()[0])


def servers(server: PostgresServer, tmp: Path) -> dict[str, Any]:
    """Ingest and the service order on SQLite, then PostgreSQL."""
    results: dict[str, Any] = {}
    pg_url = server.create_database("dex")
    setups = {
        "sqlite": _env(FLEETCORE_DATA_DIR=str(tmp / "dex-sqlite")),
        "postgresql": _env(FLEETCORE_DATABASE_URL=pg_url),
    }
    for name, env in setups.items():
        if name == "postgresql":
            _cli(env, "db", "upgrade")
        _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
        port = free_port()
        with serving(env, port, tmp / f"serve-dex-{name}.log"):
            figures = asyncio.run(_against(port))
        stored = (
            asyncio.run(_pg_audits(pg_url))
            if name == "postgresql"
            else _sqlite_audits(tmp / "dex-sqlite" / "fleetcore.db")
        )
        route_audits = 2 * ROUTE_MACHINES
        answered = figures["ingest"].pop("answered")
        figures["ingest"]["all_answered_audits_stored"] = stored == answered + route_audits
        results[name] = figures
    return results


def run() -> dict[str, Any]:
    """The parser, then both databases."""
    parser = parser_figures()
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            served = servers(server, Path(tmp))
    finally:
        server.stop()
    return {
        "name": "dex",
        "parser": parser,
        **served,
        "note": (
            "parser in-process on one core; ingest: one uvicorn worker, "
            f"{MACHINES} keep-alive machine clients from one Python process sharing the 2 "
            "cores with the server and PostgreSQL, each answer after the audit is accounted "
            f"and its telemetry committed; {WARM_UP_S:.0f} s warm-up (the baselines) excluded"
        ),
    }
