"""/metrics is not open to the internet: a bearer token when FLEETCORE_METRICS_TOKEN is set,
otherwise loopback clients only in production (issue 14, finding 10). The app is called over
ASGI with the peer address a real server would pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore.app import create_app
from tests.conftest import make_settings

TOKEN = "metrics-token-0123456789abcdef"
REMOTE = "203.0.113.7"


@asynccontextmanager
async def peer(tmp_path: Path, address: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app whose requests come from `address`."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}"
    settings = {"database_url": database_url, "auto_migrate": True, **settings}
    app = create_app(make_settings(tmp_path, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


@pytest.mark.parametrize("environment", ["test", "production"])
async def test_with_a_token_metrics_need_it_from_everywhere(
    tmp_path: Path, environment: str
) -> None:
    for address in ("127.0.0.1", REMOTE):
        async with peer(tmp_path, address, environment=environment, metrics_token=TOKEN) as http:
            for headers in (
                {},
                {"Authorization": "Bearer wrong-token"},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {TOKEN}x"},
            ):
                refused = await http.get("/metrics", headers=headers)
                assert refused.status_code == 401, (address, headers)
                assert refused.json()["error"]["code"] == "METRICS_TOKEN_REQUIRED"
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in refused.text
            for scheme in ("Bearer", "bearer"):
                allowed = await http.get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
                assert allowed.status_code == 200
                assert "fleetcore_http_requests_total" in allowed.text


async def test_in_production_without_a_token_only_loopback_reads_metrics(
    tmp_path: Path,
) -> None:
    for address in ("127.0.0.1", "::1"):
        async with peer(tmp_path, address, environment="production") as http:
            assert (await http.get("/metrics")).status_code == 200
    async with peer(tmp_path, REMOTE, environment="production") as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "METRICS_LOOPBACK_ONLY"
        assert "FLEETCORE_METRICS_TOKEN" in refused.json()["error"]["message"]
        assert (await http.get("/health")).status_code == 200  # only /metrics is closed
    async with peer(tmp_path, REMOTE, environment="test") as http:
        assert (await http.get("/metrics")).status_code == 200  # outside production: as before
