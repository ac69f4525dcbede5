"""`fleetcore serve --demo`: a few simulated devices in the server's own process.

They start once the server answers and stop as soon as it begins to stop (before its
broker closes), so the dashboard of `make run` is alive without a second command.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

import structlog
import uvicorn

from fleetcore.simulator.runner import Simulation
from fleetcore.simulator.vending_runner import DexStats

DEMO_DEVICES = 6
DEMO_RATE = 3.0  # readings/s for the whole demo fleet: a message per device every 4 s

log = structlog.get_logger(__name__)


class VendingRun(Protocol):
    """Vending work beside the server (simulator.vending_demo.DemoVendingRun)."""

    stop: asyncio.Event

    async def run(self) -> DexStats:
        """Work until `stop` is set."""


class SideRun(Protocol):
    """Other demo work beside the server that logs its own outcome
    (simulator.machines_demo.DemoMachinesRun, simulator.cameras_demo.DemoCamerasRun)."""

    stop: asyncio.Event

    async def run(self) -> None:
        """Work until `stop` is set."""


async def serve_with(
    server: uvicorn.Server,
    simulation: Simulation | None,
    vending: VendingRun | None = None,
    *sides: SideRun,
) -> None:
    """Serve; once started, run `simulation`, `vending` and the `sides` until the server is
    asked to stop."""
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            return await serving
        await asyncio.sleep(0.05)
    running = asyncio.create_task(simulation.run()) if simulation is not None else None
    selling = asyncio.create_task(vending.run()) if vending is not None else None
    working = [(side, asyncio.create_task(side.run())) for side in sides]
    while not server.should_exit:  # uvicorn sets it on SIGINT/SIGTERM, no event to await
        done, _ = await asyncio.wait(
            {serving} | ({running} if running is not None else set()),
            timeout=0.1,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if done:
            break
    if simulation is not None:
        simulation.stop.set()
    for side, _ in working:
        side.stop.set()
    for side, task in working:
        try:
            await task
        except Exception:  # as below: never the server's failure
            log.exception("demo simulator failed", side=type(side).__name__)
    if vending is not None and selling is not None:
        vending.stop.set()
        try:
            stats = await selling
        except Exception:  # as below: never the server's failure
            log.exception("vending simulator failed")
        else:
            log.info(
                "vending simulator stopped",
                reads=stats.reads,
                stored=stats.stored,
                duplicates=stats.duplicates,
                damaged=stats.damaged,
                refused=stats.refused,
            )
    if running is None:
        return await serving
    try:
        outcome = await running
    except Exception:  # the demo fleet failing must never take the server down
        log.exception("simulator failed")
    else:
        log.info(
            "simulator stopped",
            sent=outcome.stats.sent,
            acked=outcome.stats.acked,
            errors=outcome.stats.errors,
            refused=len(outcome.refused),
        )
    await serving


def run_server_with(
    server: uvicorn.Server,
    simulation: Simulation | None,
    vending: VendingRun | None = None,
    *sides: SideRun,
) -> None:
    """`server.run()`, with the simulations beside it on the same event loop."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_with(server, simulation, vending, *sides))
