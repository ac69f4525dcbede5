"""/health, /ready and /metrics, on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from fleetcore.app import create_app
from tests.conftest import make_settings
from tests.support.postgres import free_port


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_ready_when_database_current(client: httpx.AsyncClient, backend: str) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "disk.data": "ok"},
    }


async def _client_for(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(tmp_path, database_url=database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield http


async def test_not_ready_when_schema_behind(tmp_path: Path) -> None:
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    async for http in _client_for(empty, tmp_path):
        response = await http.get("/ready")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "NOT_READY"
        assert "migrations" in error["message"]
        assert error["details"]["checks"]["database"] == "ok"


async def test_not_ready_when_database_unreachable(tmp_path: Path) -> None:
    unreachable = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    async for http in _client_for(unreachable, tmp_path):
        response = await http.get("/ready")
        assert response.status_code == 503
        checks = response.json()["error"]["details"]["checks"]
        assert checks["database"] != "ok"
        assert "database" in response.json()["error"]["message"]


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/health")
    await client.get("/devices-that-do-not-exist/123")
    text = (await client.get("/metrics")).text
    assert 'fleetcore_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/devices-that-do-not-exist/123" not in text
    assert "fleetcore_http_request_duration_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text


@pytest.mark.parametrize("path", ["/api/docs", "/api/openapi.json"])
async def test_api_docs_served_offline(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    if path == "/api/docs":
        assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in response.text
        assert "cdn" not in response.text.lower()
        asset = await client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
        assert asset.status_code == 200
