"""Device page charts in headless Chromium, through `fleetcore serve`: what each range fetches
and how fast the page draws it.

Setup as an operator would (CLI + REST API, SQLite): one device, 50,000 readings of one key
in the last hour (70 ms apart) and one a minute for the 30 days before (one of them a spike).
Every range is read downsampled to the chart's width (GET .../telemetry/chart), so a chart
fetches at most one bucket per pixel column whatever the range. Figures:
- per range (1 h, 1 d, 30 d presets): points fetched (buckets), bytes of the answer, fetch
  and render time;
- render: navigation start -> the chart drawn (the `fc-chart-drawn` performance mark the
  page sets in the frame after uPlot drew), median of RUNS page loads (the 1 h preset);
- live update: a reading posted by the device, appended to the chart: setData -> uPlot's
  draw hook, and setData -> the next animation frame (which includes waiting for the
  display's next refresh, ~16.7 ms at 60 Hz).
Before charts were downsampled the 1 h preset fetched all 50,000 raw readings (five pages).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout
from tests.support.browser import chromium
from tests.support.postgres import free_port

from bench.telemetry_http import (
    ADMIN,
    PASSWORD,
    PATH,
    ROOT,
    _cli,
    _env,
    organization_admin,
    serving,
)

POINTS = 50_000
HISTORY_DAYS = 30
MINUTE, DAY = 60_000, 86_400_000
BATCH = 4_000  # readings per POST (the body limit is 256 KiB)
RANGES = {"1h": "1h", "1d": "24h", "30d": "30d"}  # reported name -> the page's preset
RUNS = 5
LIVE_UPDATES = 30


async def _setup(port: int) -> tuple[str, str]:
    """The device and its readings; returns the device id and token."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        admin = await organization_admin(http)
        device = await http.post(
            "/api/v1/devices", headers=admin, json={"name": "chart", "serial_number": "C1"}
        )
        device.raise_for_status()
        token = device.json()["access_token"]
        start = int(time.time() * 1000) - 3_540_000  # 59 minutes ago, 70 ms apart
        recent = [(start + i * 70, 20 + (i % 600) / 60) for i in range(POINTS)]
        spike = start - 13 * DAY  # one reading far above the rest: the 30 d chart keeps it
        history = [
            (ts, 500.0 if ts == spike else 18 + (ts // MINUTE) % 1440 / 240)
            for ts in range(start - HISTORY_DAYS * DAY, start - MINUTE, MINUTE)
        ]
        readings = history + recent
        for first in range(0, len(readings), BATCH):
            body = [{"ts": ts, "values": {"t": v}} for ts, v in readings[first : first + BATCH]]
            answer = await http.post(PATH, headers={"X-Device-Token": token}, json=body)
            answer.raise_for_status()
        return str(device.json()["id"]), token


async def _render_ms(page: Page, url: str) -> float:
    await page.goto(url)
    await page.wait_for_selector("#charts[data-rendered]", timeout=60_000)
    drawn: float = await page.evaluate(
        "performance.getEntriesByName('fc-chart-drawn').at(-1).startTime"
    )
    return drawn


async def _range(page: Page, preset: str) -> dict[str, Any]:
    """One preset's fetch: points (buckets), bytes, step, fetch and render time (medians)."""
    figures: list[dict[str, Any]] = []
    for _ in range(RUNS):
        await page.evaluate("delete document.getElementById('charts').dataset.rendered")
        await page.get_by_role("button", name=preset, exact=True).click()
        await page.wait_for_selector("#charts[data-rendered]", timeout=60_000)
        figures.append(await page.evaluate("window.fcChart"))
    last = figures[-1]
    return {
        "points_fetched": last["points"],
        "bytes_fetched": last["bytes"],
        "step_ms": last["step"],
        "fetch_ms_median": round(statistics.median(f["fetchMs"] for f in figures), 1),
        "render_ms_median": round(statistics.median(f["renderedMs"] for f in figures), 1),
    }


async def _measure(port: int, device_id: str, token: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    async with chromium() as browser, httpx.AsyncClient(base_url=base) as http:
        page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
        await page.goto(f"{base}/auth/login")
        await page.get_by_label("Email").fill(ADMIN)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{base}/dashboard")
        url = f"{base}/devices/{device_id}"
        renders, fetches = [], []
        for _ in range(RUNS):
            renders.append(await _render_ms(page, url))
            fetches.append(await page.evaluate("window.fcChart.fetchMs"))
        ranges = {name: await _range(page, preset) for name, preset in RANGES.items()}
        await page.wait_for_selector("[data-live-state]:has-text('live')")
        set_data: list[float] = []
        draws: list[float] = []
        frames: list[float] = []
        for n in range(LIVE_UPDATES + 5):  # the first few wait for the subscription
            answer = await http.post(
                PATH,
                headers={"X-Device-Token": token},
                json={"ts": int(time.time() * 1000), "values": {"t": 30 + n}},
            )
            answer.raise_for_status()
            try:
                await page.wait_for_selector(
                    f'#charts[data-live-frames="{len(frames) + 1}"]', timeout=2_000
                )
            except PlaywrightTimeout:
                continue  # not subscribed yet: send the next one
            stats = await page.evaluate("window.fcChart")
            set_data.append(stats["lastSetDataMs"])
            draws.append(stats["lastDrawMs"])
            frames.append(stats["lastFrameMs"])
            if len(frames) == LIVE_UPDATES:
                break
        points = await page.evaluate("window.fcChart.points")
    return {
        "ranges": ranges,
        "live_chart_points": points,
        "render_ms_median": round(statistics.median(renders), 1),
        "render_ms_runs": [round(r, 1) for r in renders],
        "render_fetch_ms_median": round(statistics.median(fetches), 1),
        "live_updates": len(frames),
        "live_setdata_ms_median": round(statistics.median(set_data), 2),
        "live_draw_ms_median": round(statistics.median(draws), 2),
        "live_draw_ms_max": round(max(draws), 2),
        "live_frame_ms_median": round(statistics.median(frames), 2),
        "live_frame_ms_max": round(max(frames), 2),
    }


def run() -> dict[str, Any]:
    """Start the server, store the readings, time the page and live updates in Chromium."""
    with tempfile.TemporaryDirectory() as tmp:
        env = _env(FLEETCORE_DATA_DIR=str(Path(tmp) / "dash"))
        _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
        port = free_port()
        with serving(env, port, Path(tmp) / "serve.log"):
            device_id, token = asyncio.run(_setup(port))
            figures = asyncio.run(_measure(port, device_id, token))
    return {"name": "dashboard_render", **figures}
