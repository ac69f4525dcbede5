"""The simulator's live status line and its closing summary (rich)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.text import Text

from fleetcore.simulator.runner import Outcome, Simulation

WINDOW_S = 5.0  # the current rate is measured over the last few seconds


class StatusLine:
    """`sent · acked · errors · rate` for a running simulation, refreshed a few times a second."""

    def __init__(self, simulation: Simulation, console: Console) -> None:
        self.simulation, self.console = simulation, console
        self._history: deque[tuple[float, int]] = deque()

    def render(self) -> Text:
        """The line as it stands now."""
        sim, stats = self.simulation, self.simulation.stats
        now = time.monotonic()
        self._history.append((now, stats.acked))
        while len(self._history) > 2 and now - self._history[0][0] > WINDOW_S:
            self._history.popleft()
        first_t, first_acked = self._history[0]
        rate = (stats.acked - first_acked) / (now - first_t) if now > first_t else 0.0
        faults = ", ".join(f"{k} {v}" for k, v in sorted(stats.faults.items())) or "none"
        line = Text()
        line.append(f"{len(sim.devices)} devices ", style="bold")
        line.append(f"({stats.connected} connected) " if sim.transport == "mqtt" else "")
        line.append(f"· sent {stats.sent:,} · acked {stats.acked:,} · ")
        line.append(f"errors {stats.errors:,}", style="red" if stats.errors else "")
        line.append(f" · {rate:,.0f}/{sim.rate:,.0f} readings/s")
        line.append(f" · faults: {faults}", style="dim")
        line.append(f" · {now - sim.started:,.0f} s", style="dim")
        return line

    async def run(self, done: asyncio.Event) -> None:
        """Redraw until `done` is set."""
        with Live(
            self.render(), console=self.console, refresh_per_second=4, transient=False
        ) as live:
            while not done.is_set():
                live.update(self.render())
                try:
                    await asyncio.wait_for(done.wait(), 0.25)
                except TimeoutError:
                    continue
            live.update(self.render())
        if not self.console.is_terminal:  # rich ends the line itself only on a terminal
            self.console.line()


def summary(outcome: Outcome, requested: float) -> str:
    """The closing lines: requested against achieved, acked, errors, unacknowledged."""
    stats = outcome.stats
    lines = [
        f"ran {outcome.seconds:.1f} s: requested {requested:,.1f} readings/s, "
        f"achieved {outcome.achieved_per_s:,.1f}",
        f"sent {stats.sent:,} · acked {stats.acked:,} · errors {stats.errors:,} · "
        f"unacknowledged at stop {outcome.unacked:,}",
    ]
    if outcome.refused:
        lines.append(f"{len(outcome.refused)} devices could not connect, e.g. {outcome.refused[0]}")
    return "\n".join(lines)
