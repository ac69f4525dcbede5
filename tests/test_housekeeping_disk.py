"""/ready watches free disk space (SQLite's data directory, file media and archives); /health
stays cheap. The thresholds are settings: set above or below this machine's real free space."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcore.config import ConfigError, load_settings
from fleetcore.db import Database
from fleetcore.ops.disk import directories, disk_checks, free_percent
from tests.conftest import client_for, make_settings, running_app


async def _ready(db: Database, tmp_path: Path, **settings: object) -> tuple[int, dict[str, object]]:
    async with running_app(db, tmp_path, **settings) as app, client_for(app) as http:
        response = await http.get("/ready")
        health = await http.get("/health")
    # Liveness says nothing of disks, whatever they hold.
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    body: dict[str, object] = response.json()
    return response.status_code, body


async def test_plenty_of_space_is_ok(db: Database, tmp_path: Path) -> None:
    free = free_percent(tmp_path)
    assert 0 < free <= 100
    status, body = await _ready(
        db, tmp_path, ready_disk_warn_percent=free / 2, ready_disk_min_percent=0
    )
    assert status == 200
    assert body["status"] == "ready"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["disk.data"] == "ok"


async def test_under_the_warning_it_warns_and_stays_ready(db: Database, tmp_path: Path) -> None:
    status, body = await _ready(db, tmp_path, ready_disk_warn_percent=100)
    assert status == 200
    assert body["status"] == "warn"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["disk.data"].startswith("warn: ")
    assert checks["disk.data"].endswith("% free")
    assert checks["database"] == "ok"


async def test_under_the_floor_it_is_not_ready(db: Database, tmp_path: Path) -> None:
    status, body = await _ready(
        db, tmp_path, ready_disk_warn_percent=100, ready_disk_min_percent=100
    )
    assert status == 503
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == "NOT_READY"
    assert "disk.data" in error["message"]
    assert "under the floor of 100%" in error["details"]["checks"]["disk.data"]


def test_directories_on_one_filesystem_are_checked_once(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, archive_enabled=True)
    # data, media and archive all live under tmp_path (media and archive not made yet)
    assert set(directories(settings)) == {"disk.data", "disk.media", "disk.archive"}
    assert list(disk_checks(settings)) == ["disk.data"]


def test_postgresql_and_s3_media_watch_no_disk(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        database_url="postgresql://u:p@db.example.com/fleetcore",
        media_store="s3",
        media_s3_bucket="media",
    )
    assert directories(settings) == {}


def test_the_floor_may_not_exceed_the_warning(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="READY_DISK_MIN_PERCENT"):
        load_settings(data_dir=tmp_path, ready_disk_warn_percent=5, ready_disk_min_percent=6)
